"""Catalogue scale: time and peak memory of every stage at the GenAIR paper's Beauty size, and evaluation at 1M items.

    python benchmarks/bench_catalogue.py --folder=/tmp/catalogue                      # 52k users, 57k items
    python benchmarks/bench_catalogue.py --folder=/tmp/catalogue --max_steps=40       # time the first 40 steps
    python benchmarks/bench_catalogue.py --folder=/tmp/million --items=1000000 --users=10000 --once --dim=32 \
        --stages=eval --eval_batch_size=64

A generated dataset with Beauty's shape: `--users` users with 5 + geometric(mean 3) interactions each,
items drawn by a power law (Zipf exponent 1.05 over `--items` item ids, then random slots rewritten so that
every id occurs at least once: the catalogue has exactly `--items` items), a template title per item, and
random `.itememb` vectors (`--dim` columns). Each measurement runs in its own process, so its peak RSS is its
own: dataset loading (RecBole's `create_dataset` + split), co-occurrence counts (training split),
one training epoch for SASRec and SASRecGenAIR (prefix and all-position modes,
GenAIR with and without calibration), and one full-ranking evaluation of the validation users (in
batches of `eval_batch_size` users, so memory grows with that batch and the catalogue, not with the
number of users). `--max_steps` times the first N steps and gives the epoch time they imply (marked
"est."). Run by hand; the numbers go in the README and the closing note.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NAME = "catalogue"
SETTINGS = {
    "dataset": NAME, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "normalize_all": False,
    "hidden_size": 64, "inner_size": 256, "embedding_size": 64, "n_layers": 2, "n_heads": 2,
    "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": {"prefix": 2048, "all_positions": 128}, "eval_batch_size": 256,
    "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "seed": 2020, "show_progress": False,
    "state": "WARNING", "fast_dropout": True, "epochs": 1,
}


def generate(folder, users, items, dim, once=False, seed=2020):
    """Write catalogue.inter / .item / .itememb under `folder`; returns the number of interactions.

    `once`: every item id exactly once, shuffled, in `users` histories of equal length (a catalogue of
    exactly `items` items at the least cost, for the evaluation stage at 1M items)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / f"{NAME}.itememb").exists():
        return sum(1 for _ in open(folder / f"{NAME}.inter")) - 1
    rng = np.random.default_rng(seed)
    if once:
        lengths = np.full(users, items // users)
        drawn = rng.permutation(items)[: int(lengths.sum())] + 1
    else:
        weights = 1.0 / np.arange(1, items + 1) ** 1.05
        weights /= weights.sum()
        lengths = 5 + rng.geometric(1 / 3, size=users) - 1
        drawn = rng.choice(items, size=int(lengths.sum()), p=weights) + 1
        # every item at least once (a catalogue of exactly `items` items): random slots take each id once
        drawn[rng.permutation(len(drawn))[:items]] = rng.permutation(items) + 1
    n = int(lengths.sum())
    user = np.repeat(np.arange(1, users + 1), lengths)
    stamp = np.arange(n) + 1_000_000  # increasing within every user
    with open(folder / f"{NAME}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(user.tolist(), drawn.tolist(), stamp.tolist()))
    with open(folder / f"{NAME}.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\n")
        f.writelines(f"{i}\tItem {i} for the home\tBeauty Category{i % 200}\n" for i in range(1, items + 1))
    used = np.unique(drawn)  # a power law leaves some items without interactions: they are not in the catalogue
    with open(folder / f"{NAME}.itememb", "w") as f:
        f.write("iid:token\titem_emb:float_seq\n")
        for begin in range(0, len(used), 20000):
            block = rng.standard_normal((len(used[begin: begin + 20000]), dim)).astype(np.float32)
            f.writelines(f"{item}\t{' '.join(f'{v:.4f}' for v in row)}\n"
                         for item, row in zip(used[begin: begin + 20000].tolist(), block))
    return n


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(stage, model, mode, alpha, folder, max_steps, eval_batch_size=256, all_positions_batch=128):
    """Inside the child: build what `stage` needs, time it; one JSON line."""
    import torch

    from recbole_genair.config import Config
    from recbole_genair.data import create_dataset
    from recbole_genair.data.cooccurrence import cooccurrence_matrix
    from recbole_genair.quick_start import build_model, prepare_data
    from recbole_genair.utils import get_trainer

    torch.set_num_threads(1)
    settings = {**SETTINGS, "data_path": str(folder), "train_mode": mode, "alpha": alpha,
                "llm_view_widths": None, "eval_batch_size": eval_batch_size,
                "train_batch_size": {"prefix": 2048, "all_positions": all_positions_batch}}
    if not model.endswith("GenAIR"):
        settings.pop("alpha")
    start = time.perf_counter()
    config = Config(model, config_dict=settings)
    dataset = create_dataset(config)
    train_data, valid_data, _ = prepare_data(config, dataset)
    out = {"stage": stage, "model": model, "mode": mode, "alpha": alpha, "items": dataset.item_num - 1,
           "users": dataset.user_num - 1, "interactions": len(dataset.inter_feat)}
    if stage == "load":
        out["seconds"] = time.perf_counter() - start
    elif stage == "cooccurrence":
        start = time.perf_counter()
        counts = cooccurrence_matrix(train_data._dataset)
        out.update(seconds=time.perf_counter() - start, pairs=int(counts.nnz))
    else:
        model_ = build_model(config, train_data)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_)
        trainer.collect_training_statistics(train_data)
        out["peak_before_gb"] = peak_gb()  # loading's high-water mark: the stage raised the peak only if above it
        if stage == "epoch":
            steps = len(train_data)
            if max_steps and max_steps < steps:
                batches = []
                for k, batch in enumerate(train_data):  # the loader's own batches, first max_steps of them
                    if k == max_steps:
                        break
                    batches.append(batch)
                train_data_ = batches
                start = time.perf_counter()
                trainer._train_epoch(train_data_, 0)
                took = time.perf_counter() - start
                out.update(seconds_measured=took, steps_measured=max_steps, steps=steps,
                           seconds=took / max_steps * steps, estimated=True)
            else:
                start = time.perf_counter()
                trainer._train_epoch(train_data, 0)
                out.update(seconds=time.perf_counter() - start, steps=steps, estimated=False)
        else:  # eval
            start = time.perf_counter()
            result = trainer.evaluate(valid_data, load_best_model=False)
            out.update(seconds=time.perf_counter() - start, ndcg=result["ndcg@10"],
                       eval_batch_size=config["eval_batch_size"])
    out["peak_gb"] = peak_gb()
    print(json.dumps(out))


PLAN = {
    "load": [("SASRecGenAIR", "prefix", 0.0)],
    "cooccurrence": [("SASRecGenAIR", "prefix", 0.0)],
    "epoch": [("SASRec", "prefix", 0.0), ("SASRecGenAIR", "prefix", 0.0), ("SASRecGenAIR", "prefix", 0.0001),
              ("SASRec", "all_positions", 0.0), ("SASRecGenAIR", "all_positions", 0.0),
              ("SASRecGenAIR", "all_positions", 0.0001)],
    "eval": [("SASRec", "prefix", 0.0), ("SASRecGenAIR", "prefix", 0.0)],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="where the generated dataset is written (and reused)")
    parser.add_argument("--users", type=int, default=52_204)
    parser.add_argument("--items", type=int, default=57_289)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--stages", default="load,cooccurrence,epoch,eval")
    parser.add_argument("--max_steps", type=int, default=0, help="time only the first N training steps (0: all)")
    parser.add_argument("--output", default=None, help="JSON lines file for the measurements")
    parser.add_argument("--once", action="store_true", help="every item exactly once (see generate)")
    parser.add_argument("--all_positions_batch", type=int, default=128, help="sequences per all-positions batch")
    parser.add_argument("--modes", default="prefix,all_positions", help="train modes of the epoch stage")
    parser.add_argument("--eval_batch_size", type=int, default=256, help="users per full-ranking batch")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    if args.child:
        stage, model, mode, alpha = args.child
        measure(stage, model, mode, float(alpha), folder, args.max_steps, args.eval_batch_size, args.all_positions_batch)
        return
    start = time.perf_counter()
    n = generate(folder / NAME, args.users, args.items, args.dim, once=args.once)
    print(f"dataset: {args.users} users, {args.items} items, {n} interactions, {args.dim}-dim vectors "
          f"({time.perf_counter() - start:.0f} s to generate or find)", flush=True)
    rows = []
    for stage in args.stages.split(","):
        for model, mode, alpha in PLAN[stage]:
            if stage == "epoch" and mode not in args.modes.split(","):
                continue
            cmd = [sys.executable, __file__, f"--folder={folder}", f"--max_steps={args.max_steps}",
                   f"--eval_batch_size={args.eval_batch_size}", f"--all_positions_batch={args.all_positions_batch}",
                   "--child", stage, model, mode, str(alpha)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:])
                raise SystemExit(f"{stage} {model} {mode} failed")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            est = " (est.)" if row.get("estimated") else ""
            before = f" (before the stage {row['peak_before_gb']:.2f})" if "peak_before_gb" in row else ""
            print(f"{stage:12s} {model:13s} {mode:13s} alpha={alpha:<7g} {row['seconds']:9.1f} s{est}  "
                  f"peak {row['peak_gb']:.2f} GB{before}", flush=True)
            if args.output:
                with open(args.output, "a") as f:
                    f.write(json.dumps(row) + "\n")
    by = {(r["stage"], r["model"], r["mode"], r["alpha"]): r for r in rows}
    for mode in ("prefix", "all_positions"):
        base, ours = by.get(("epoch", "SASRec", mode, 0.0)), by.get(("epoch", "SASRecGenAIR", mode, 0.0))
        if base and ours:
            print(f"epoch {mode}: SASRecGenAIR / SASRec time {ours['seconds'] / base['seconds']:.2f}x, "
                  f"peak memory {ours['peak_gb'] / base['peak_gb']:.2f}x")


if __name__ == "__main__":
    main()
