"""Prefix vs all-position training (issue 16): time to early stopping and the NDCG@10 it reaches.

    python benchmarks/bench_train_modes.py --datasets=ml-100k --seeds=2020,2021,2022 --output=results/train-modes/ml-100k.json
    python benchmarks/bench_train_modes.py --datasets=amazon-office --data_path=$HOME/data --seeds=2020,2021,2022 \
        --output=results/train-modes/amazon-office.json
    python benchmarks/bench_train_modes.py --report_only=results/train-modes/ml-100k.json,results/train-modes/amazon-office.json \
        --datasets=ml-100k,amazon-office
    python benchmarks/bench_train_modes.py --datasets=genair-test --data_path=tests/test_data --models=SASRec \
        --seeds=2020 --epochs=1 --load_col="{'inter': ['user_id', 'item_id', 'rating', 'timestamp']}"

Each (dataset, model, train_mode, seed) trains in its own process through the package's data preparation,
model and trainer, until early stopping (or `epochs`, default here 200), then tests the best checkpoint.
Any other `--key=value` is a RecBole setting for every run (dataset YAML defaults apply, e.g. each mode's
`train_batch_size`); `--all_positions_batch_size` overrides `train_batch_size` of the all-position runs only;
`--modes` measures one mode. `--output` is rewritten after every run and runs already in it are skipped
(by dataset, model, mode and seed: one file per setting), so an interrupted benchmark resumes; `--report_only` tables one or more such files. Prints per run and a
table (mean and standard deviation over seeds): seconds per epoch, epochs run, best epoch, wall seconds to
the end of training (validation included), best validation and test NDCG@10; then the ratios prefix /
all_positions. Run by hand; numbers go in the README, never into tests.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("prefix", "all_positions")


def measure(model, dataset, mode, seed, settings):
    """Runs inside the child process; prints one JSON line."""
    import torch
    from recbole.utils import init_logger, init_seed

    from recbole_genair.config import Config
    from recbole_genair.data import create_dataset
    from recbole_genair.quick_start import build_model, prepare_data
    from recbole_genair.runtime import apply_speed_fixes
    from recbole_genair.utils import get_trainer

    apply_speed_fixes()
    checkpoints = tempfile.mkdtemp(prefix="bench_train_modes-")
    config_dict = {"epochs": 200, "state": "WARNING", "show_progress": False, "checkpoint_dir": checkpoints,
                   **(settings["all_positions"] if mode == "all_positions" else {}),
                   "train_mode": mode, "seed": seed}
    config = Config(model, dataset, config_dict=config_dict, cmd_args=settings["cmd_args"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    data = create_dataset(config)
    train_data, valid_data, test_data = prepare_data(config, data)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, build_model(config, train_data))

    start = time.perf_counter()
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    wall = time.perf_counter() - start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    shutil.rmtree(checkpoints, ignore_errors=True)
    training = trainer.training_summary()  # the trainer's own record of its epochs and validations
    print(json.dumps({
        "epoch_s": statistics.median(trainer.epoch_seconds), "epochs": training["epochs"],
        "best_epoch": training["best_epoch"], "early_stopped": training["stopped_early"], "wall_s": wall,
        "steps_per_epoch": len(train_data),
        "valid_ndcg10": best_valid.get("ndcg@10"), "test_ndcg10": test.get("ndcg@10"),
        "train_batch_size": training["train_batch_size"], "torch_threads": torch.get_num_threads(),
        "all_positions_stride": config["all_positions_stride"] if mode == "all_positions" else None,
    }))


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g} ± {sd:.2g}"


def variant(mode, row):
    """The row label of a run: its train mode, with the window stride where windows overlap."""
    stride = row.get("all_positions_stride")
    return f"{mode}, stride {stride}" if mode == "all_positions" and stride else mode


def report(results, datasets, models, seeds):
    columns = ("epoch_s", "epochs", "best_epoch", "wall_s", "valid_ndcg10", "test_ndcg10")
    modes = sorted({m for (_, _, m, _) in results}, key=lambda m: (m != "prefix", m))
    print("\n| dataset | model | train_mode | seeds | s/epoch | epochs | best epoch | wall s | valid NDCG@10 | "
          "test NDCG@10 | early stopped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for model in models:
            for mode in modes:
                runs = [results[(dataset, model, mode, s)] for s in seeds if (dataset, model, mode, s) in results]
                if runs:
                    cells = [mean_sd([r[c] for r in runs]) for c in columns]
                    stopped = f"{sum(r['early_stopped'] for r in runs)}/{len(runs)}"
                    print(f"| {dataset} | {model} | {mode} | {len(runs)} | " + " | ".join(cells) + f" | {stopped} |")
    print("\nratios prefix / all positions (means over seeds; test NDCG@10 difference all positions - prefix, "
          "in prefix sds where prefix has several seeds):")
    for dataset in datasets:
        for model in models:
            runs = {m: [results[(dataset, model, m, s)] for s in seeds if (dataset, model, m, s) in results] for m in modes}
            if not runs.get("prefix"):
                continue
            mean = {m: {c: statistics.mean(r[c] for r in rs) for c in ("epoch_s", "wall_s", "test_ndcg10")}
                    for m, rs in runs.items() if rs}
            sd = statistics.stdev([r["test_ndcg10"] for r in runs["prefix"]]) if len(runs["prefix"]) > 1 else 0.0
            for mode in mean:
                if mode == "prefix":
                    continue
                diff = mean[mode]["test_ndcg10"] - mean["prefix"]["test_ndcg10"]
                print(f"  {dataset} {model} ({mode}): s/epoch {mean['prefix']['epoch_s'] / mean[mode]['epoch_s']:.2f}x, "
                      f"wall to early stopping {mean['prefix']['wall_s'] / mean[mode]['wall_s']:.2f}x, "
                      f"test NDCG@10 {diff:+.4f}" + (f" ({diff / sd:+.2f} sd)" if sd > 0 else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--datasets", default="ml-100k,amazon-office")
    parser.add_argument("--models", default="SASRec,SASRecGenAIR,GRU4Rec,GRU4RecGenAIR")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--all_positions_batch_size", type=int, default=None,
                        help="train_batch_size of the all_positions runs (default: the same as prefix runs)")
    parser.add_argument("--modes", default=",".join(MODES), help="train modes to measure (default: both)")
    parser.add_argument("--output", default=None,
                        help="JSON file of every run's numbers, rewritten after each run; runs already in it are "
                             "skipped, so an interrupted benchmark resumes and --report_only tables several files")
    parser.add_argument("--report_only", default=None,
                        help="comma-separated JSON files written by --output: print their table, run nothing")
    parser.add_argument("--child", nargs=5, metavar=("MODEL", "DATASET", "MODE", "SEED", "SETTINGS"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        model, dataset, mode, seed, settings = args.child
        measure(model, dataset, mode, int(seed), json.loads(settings))
        return

    given = [a.split("=", 1)[0] for a in rest if a.split("=", 1)[0] in ("--seed", "--train_mode")]
    if given:
        parser.error(f"{', '.join(given)} would be replaced by --seeds and by both training modes; leave it out")
    settings = json.dumps({"cmd_args": rest, "all_positions": (
        {"train_batch_size": args.all_positions_batch_size} if args.all_positions_batch_size else {})})
    datasets, models = args.datasets.split(","), args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.report_only:
        results = {}
        for path in args.report_only.split(","):
            results.update(load(path))
        report(results, datasets, models, seeds)
        return
    results = load(args.output) if args.output and os.path.exists(args.output) else {}
    for dataset in datasets:
        for model in models:
            for seed in seeds:
                for mode in modes:
                    if any((r["dataset"], r["model"], r["train_mode"], r["seed"]) == (dataset, model, mode, seed)
                           for r in results.values()):
                        continue
                    cmd = [sys.executable, __file__, "--child", model, dataset, mode, str(seed), settings]
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode != 0:
                        print(f"{dataset} {model} {mode} seed {seed} failed:\n{out.stderr[-3000:]}", flush=True)
                        continue
                    r = {**json.loads(out.stdout.strip().splitlines()[-1]),
                         "dataset": dataset, "model": model, "train_mode": mode, "seed": seed}
                    results[(dataset, model, variant(mode, r), seed)] = r
                    print(f"{dataset:14s} {model:14s} {mode:13s} seed {seed}: {r['epoch_s']:7.2f} s/epoch "
                          f"({r['steps_per_epoch']} steps), {r['epochs']:3d} epochs (best {r['best_epoch']}), "
                          f"{r['wall_s']:8.1f} s, valid {r['valid_ndcg10']:.4f}, test {r['test_ndcg10']:.4f}", flush=True)
                    if args.output:
                        save(results, args.output)
    report(results, datasets, models, seeds)


def load(path):
    with open(path, encoding="utf-8") as f:
        return {(r["dataset"], r["model"], variant(r["train_mode"], r), r["seed"]): r for r in json.load(f)}


def save(results, path):
    """Writes every run so far, atomically (a killed benchmark keeps the runs it finished)."""
    rows = list(results.values())
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
