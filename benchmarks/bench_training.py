"""Training/evaluation speed and peak memory: stock RecBole vs our run function vs LLM-enhanced models.

    python benchmarks/bench_training.py --dataset=ml-100k --epochs=2
    python benchmarks/bench_training.py --models=SASRec,SASRecGenAIR,SASRecTFLLMER

Each variant runs in its own process (our speed fixes are process-wide), with the same settings and
seed; "stock" is RecBole's own Config/Trainer with none of our fixes. Prints seconds per training
epoch, seconds per full-ranking validation pass, peak RSS, and the ratios against SASRec run through
our run function. Run by hand; numbers go in the closing note, never into tests.
"""
import argparse
import json
import subprocess
import sys
import time

SETTINGS = {
    "hidden_size": 64,
    "inner_size": 256,
    "embedding_size": 64,
    "n_layers": 2,
    "n_heads": 2,
    "learning_rate": 0.001,
    "train_batch_size": 2048,
    "eval_batch_size": 4096,
    "MAX_ITEM_LIST_LENGTH": 50,
    "train_neg_sample_args": None,
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "normalize_all": False,
    "metrics": ["Recall", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "seed": 2020,
    "show_progress": False,
    "state": "WARNING",
}


def measure(variant, model, dataset, epochs, settings):
    """Runs inside the child process; prints one JSON line."""
    import resource

    if variant == "stock":
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_logger, init_seed

        config = Config(model=model, dataset=dataset, config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        data = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, data)
        init_seed(config["seed"], config["reproducibility"])
        net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    else:
        from recbole.data import data_preparation
        from recbole.utils import init_logger, init_seed

        from recbole_genair.config import Config
        from recbole_genair.data import create_dataset
        from recbole_genair.quick_start import build_model
        from recbole_genair.utils import get_trainer

        config = Config(model=model, dataset=dataset, config_dict={**settings, "fast_dropout": variant == "ours+fast"})
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        data = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, data)
        net = build_model(config, train_data)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        if hasattr(trainer, "_build_calibration"):
            trainer.calibration = trainer._build_calibration(train_data)
    trainer.eval_collector.data_collect(train_data)
    epoch_times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        epoch_times.append(time.perf_counter() - start)
    eval_times = []
    for _ in range(3):
        start = time.perf_counter()
        trainer.evaluate(valid_data, load_best_model=False)
        eval_times.append(time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"epoch_s": min(epoch_times), "epoch_all_s": epoch_times, "eval_s": min(eval_times), "peak_gb": peak_gb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="SASRecGenAIR", help="our models to time besides SASRec")
    parser.add_argument("--no-stock", action="store_true", help="skip stock RecBole (it is the slow one)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], args.child[1], args.dataset, args.epochs, SETTINGS)
        return

    runs = [] if args.no_stock else [("stock", "SASRec")]
    runs += [("ours", "SASRec"), ("ours+fast", "SASRec")]
    runs += [("ours+fast", m) for m in args.models.split(",") if m]
    results = {}
    for variant, model in runs:
        cmd = [sys.executable, __file__, f"--dataset={args.dataset}", f"--epochs={args.epochs}", "--child", variant, model]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{variant} {model} failed:\n{out.stderr[-3000:]}")
            continue
        results[(variant, model)] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[(variant, model)]
        print(f"{variant:10s} {model:16s} epoch {r['epoch_s']:7.2f} s   eval {r['eval_s']:6.3f} s   peak {r['peak_gb']:.2f} GB", flush=True)

    base = results.get(("ours+fast", "SASRec"))
    if not base:
        return
    print(f"\nsettings: {json.dumps(SETTINGS)}; epochs timed: {args.epochs} (min taken)")
    print("reference (b) = SASRec through our run function, fast_dropout on")
    if ("stock", "SASRec") in results:
        print(f"(a)/(b) epoch: stock RecBole / ours = {results[('stock', 'SASRec')]['epoch_s'] / base['epoch_s']:.2f}")
    if ("ours", "SASRec") in results:
        print(f"ours without fast_dropout / (b) epoch = {results[('ours', 'SASRec')]['epoch_s'] / base['epoch_s']:.2f}")
    for (variant, model), r in results.items():
        if variant == "ours+fast" and model != "SASRec":
            print(
                f"{model}/(b): epoch {r['epoch_s'] / base['epoch_s']:.3f}, eval {r['eval_s'] / base['eval_s']:.3f}, "
                f"peak memory {r['peak_gb'] / base['peak_gb']:.3f}"
            )


if __name__ == "__main__":
    main()
