"""The calibration ablation: SASRecGenAIR at each (kernel, alpha) against the table's SASRecGenAIR, from finished runs.

    python benchmarks/summarise_calibration.py results/calibration-amazon-office results/compare-amazon-office \
        > results/calibration-amazon-office/summary.md

Reads <grid>/<kernel>-<alpha>/runs/SASRecGenAIR-seed*.json and the reference runs <reference>/runs/SASRecGenAIR-*.
Per setting: test NDCG@10 and tail NDCG@10 (mean +- std over the seeds it shares with the reference, ratio of
means, two-sided paired t-test), the median over epochs of the calibration term's gradient on the projector over
the ranking loss's (`cal/rank grad`), epochs run, and what the trained item table looks like (from the runs'
checkpoints): mean pairwise cosine of the L2-normalised rows (what the repulsion lowers), centred matrix entropy
(GenAIR eq. 25) and the shared offset's share of the item norm.
"""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from item_table_geometry import geometry
from recbole_genair.quick_start import load_data_and_model

MODEL = "SASRecGenAIR"


def runs(folder):
    out = {}
    for path in sorted((folder / "runs").glob(f"{MODEL}-seed*.json")):
        record = json.loads(path.read_text())
        out[record["seed"]] = record
    return out


def table_shape(checkpoint):
    """Mean pairwise cosine of the normalised item rows, centred entropy, offset / norm of one checkpoint."""
    _, model, *_ = load_data_and_model(checkpoint, trust=True)  # this repository's own runs
    logging.getLogger().handlers.clear()
    with torch.no_grad():
        rows = torch.nn.functional.normalize(model.item_embedding.weight[1:model.n_items].double(), dim=1)
        n = rows.size(0)
        cosine = ((rows.sum(0).norm() ** 2 - n) / (n * (n - 1))).item()  # mean over pairs i != j
    shape = geometry(model)
    return cosine, shape["entropy_centred"], shape["offset_ratio"]


def main():
    grid, reference = Path(sys.argv[1]), Path(sys.argv[2])
    base = runs(reference)
    settings = [("reference", reference)] + sorted(
        ((p.name, p) for p in grid.iterdir() if (p / "runs").is_dir()),
        key=lambda item: (item[0].split("-")[0], float(item[0].split("-", 1)[1])))
    print("| setting | seeds | NDCG@10 | vs reference | tail NDCG@10 | vs reference | cal/rank grad (median) | epochs | "
          "mean cosine | entropy centred | offset / norm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, folder in settings:
        mine = runs(folder)
        seeds = sorted(set(mine) & set(base))
        if not seeds:
            continue

        def values(records, key):
            return np.array([records[s]["test"][key] for s in seeds])

        def vs(key):
            if name == "reference":
                return "-"
            x, y = values(mine, key), values(base, key)
            p = stats.ttest_rel(x, y).pvalue if len(seeds) > 1 else float("nan")
            return f"{x.mean() / y.mean():.2f}x (p={p:.2f})"

        def mean_std(key):
            x = values(mine, key)
            return f"{x.mean():.4f} ± {x.std(ddof=1):.4f}" if len(x) > 1 else f"{x.mean():.4f}"

        ratios = [r for s in seeds for r in (mine[s]["training"].get("calibration_gradient_ratio") or [])]
        ratio = f"{np.median(ratios):.1e}" if ratios else "n/a"
        epochs = np.mean([mine[s]["training"]["epochs"] for s in seeds])
        shapes = np.array([table_shape(mine[s]["checkpoint"]) for s in seeds])
        cosine, entropy, offset = shapes.mean(0)
        print(f"| {name} | {len(seeds)} | {mean_std('ndcg@10')} | {vs('ndcg@10')} | {mean_std('tailndcg@10')} | "
              f"{vs('tailndcg@10')} | {ratio} | {epochs:.0f} | {cosine:.3f} | {entropy:.2f} | {offset:.2f} |")


if __name__ == "__main__":
    main()
