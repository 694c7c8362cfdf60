"""The evidence behind the per-family defaults (issue 31): training mode x patience, quality against training time.

    python benchmarks/summarise_defaults.py \
        --bench=results/train-modes/ml-100k.json,results/train-modes/ml-100k-stride25.json,results/train-modes/amazon-office.json,results/train-modes/ml-100k-prefix-patience10.json,results/train-modes/amazon-office-prefix-patience10.json \
        --compare=results/issue17-converged/ml-100k/paper,results/issue17-converged/amazon-office/paper \
        --residual=results/issue17-converged/ml-100k/residual,results/issue17-converged/amazon-office/residual \
        --output=results/train-modes/defaults.md

Rows come from two kinds of record, both until early stopping on validation NDCG@10: the training-mode
benchmark's JSON (`benchmarks/bench_train_modes.py`; patience 3 unless the file name says `patience10`) and
comparison run records (`--compare`, all positions with patience 10 in the folders given). Columns: seeds, epochs,
training seconds (epochs x median seconds per epoch, validation excluded, so both kinds count the same thing),
best validation and test NDCG@10 (mean ± sd over seeds). Only seeds 2020-2022 are read from the comparisons, the
seeds the benchmark ran; `--residual` folders add their GenAIR runs (`item_residual`, the default of SASRecGenAIR
and GRU4RecGenAIR now) as rows of their own. The verdict per family is taken on validation, never on test.
"""
import argparse
import json
import re
import statistics
from pathlib import Path

SEEDS = (2020, 2021, 2022)


def bench_rows(path):
    patience = 10 if "patience10" in Path(path).name else 3
    for r in json.loads(Path(path).read_text()):
        stride = r.get("all_positions_stride")
        mode = f"{r['train_mode']}" + (f", stride {stride}" if r["train_mode"] == "all_positions" and stride else "")
        yield {"dataset": r["dataset"], "model": r["model"], "mode": mode, "patience": patience, "seed": r["seed"],
               "epochs": r["epochs"], "train_s": r["epoch_s"] * r["epochs"], "valid": r["valid_ndcg10"],
               "test": r["test_ndcg10"]}


def compare_rows(folder, stride, label=""):
    for path in sorted(Path(folder, "runs").glob("*.json")):
        r = json.loads(path.read_text())
        if r["seed"] not in SEEDS or re.match(r"BERT4Rec", r["model"]) or (label and "GenAIR" not in r["model"]):
            continue
        t = r["training"]
        mode = t["train_mode"] + (f", stride {stride[r['dataset']]}" if stride.get(r["dataset"]) else "")
        yield {"dataset": r["dataset"], "model": r["model"] + label, "mode": mode, "patience": 10, "seed": r["seed"],
               "epochs": t["epochs"], "train_s": t["seconds_per_epoch"] * t["epochs"], "valid": r["valid"]["ndcg@10"],
               "test": r["test"]["ndcg@10"]}


def mean_sd(values, digits=4):
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def table(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["mode"], r["patience"]), {})[r["seed"]] = r
    lines = ["| dataset | model | train_mode | patience | seeds | epochs | train s | valid NDCG@10 | test NDCG@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(groups, key=lambda k: (k[0] != "ml-100k", k[0], k[1], k[2] != "prefix", k[2], k[3]))
    for key in order:
        runs = list(groups[key].values())
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(runs)} | "
                     f"{mean_sd([r['epochs'] for r in runs], 1)} | {mean_sd([r['train_s'] for r in runs], 0)} | "
                     f"{mean_sd([r['valid'] for r in runs])} | {mean_sd([r['test'] for r in runs])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--bench", default="", help="bench_train_modes.py JSON files, comma-separated")
    parser.add_argument("--compare", default="", help="--compare output folders (all positions, patience 10)")
    parser.add_argument("--residual", default="", help="--compare output folders of GenAIR with item_residual")
    parser.add_argument("--strides", default="ml-100k=25", help="all_positions_stride of the comparisons per dataset")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    stride = dict(item.split("=") for item in args.strides.split(",") if item)
    rows = [r for path in args.bench.split(",") if path for r in bench_rows(path)]
    rows += [r for folder in args.compare.split(",") if folder for r in compare_rows(folder, stride)]
    rows += [r for folder in args.residual.split(",") if folder for r in compare_rows(folder, stride, " + residual")]
    text = table(rows)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
