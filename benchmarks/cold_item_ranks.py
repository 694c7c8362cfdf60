"""Where held-out (cold) items land in full ranking: the rank distribution behind Cold NDCG@10 / Hit@10.

    python benchmarks/cold_item_ranks.py results/cold-amazon-office

For every run of a `--compare --cold_items=...` folder it reloads the checkpoint the run was tested on,
ranks every test user's target among all items as RecBole's full-ranking evaluation does (padding and the
user's training items excluded), and reports per model (mean over seeds): the median rank and the mean
percentile rank (0 = top, 0.5 = chance) of cold targets and of the other targets, and the share of cold
targets in the top 100. Top-10 metrics of items that no user clicked in training are near zero for every
model; this says whether text-derived rows put them anywhere near the top. Run by hand; numbers go in the
README.
"""
import argparse
import json
import logging
import statistics
from pathlib import Path

import numpy as np
import torch

from recbole_genair.quick_start import load_data_and_model


def target_ranks(model, test_data):
    """(rank of each test target among all items, 1 = best; target item ids), as RecBole's full ranking scores them."""
    model.eval()
    ranks, targets = [], []
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in test_data:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).clone()
            scores[:, 0] = -torch.inf
            if history_index is not None:
                scores[history_index] = -torch.inf
            target = scores[positive_u, positive_i]
            ranks.append(1 + (scores[positive_u] > target.unsqueeze(1)).sum(1))
            targets.append(positive_i)
    return torch.cat(ranks).numpy(), torch.cat(targets).numpy()


def run_summary(record):
    _, model, dataset, _, _, test_data = load_data_and_model(record["checkpoint"], trust=True)  # this repository's own runs
    ranks, targets = target_ranks(model, test_data)
    cold = np.isin(targets, getattr(dataset, "cold_item_ids", np.array([], dtype=int)))
    n = dataset.item_num - 1
    out = {}
    for name, mask in (("cold", cold), ("other", ~cold)):
        r = ranks[mask]
        out[name] = {"targets": int(mask.sum()), "median_rank": float(np.median(r)) if r.size else None,
                     "mean_percentile": float(((r - 1) / n).mean()) if r.size else None,
                     "top100": float((r <= 100).mean()) if r.size else None}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a --compare output folder (runs/*.json with their checkpoints)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    per_model = {}
    for path in sorted(Path(args.folder, "runs").glob("*.json")):
        record = json.loads(path.read_text())
        summary = run_summary(record)
        per_model.setdefault(record["model"], []).append(summary)
        print(record["model"], record["seed"], json.dumps(summary), flush=True)
    print("\n| model | cold: median rank | cold: mean percentile | cold: top 100 | other: median rank | "
          "other: mean percentile |")
    print("|---|---|---|---|---|---|")
    for model, runs in per_model.items():
        mean = {group: {key: statistics.mean(r[group][key] for r in runs) for key in
                        ("median_rank", "mean_percentile", "top100")} for group in ("cold", "other")}
        print(f"| {model} ({len(runs)} seeds) | {mean['cold']['median_rank']:.0f} | {mean['cold']['mean_percentile']:.3f} | "
              f"{mean['cold']['top100']:.3f} | {mean['other']['median_rank']:.0f} | {mean['other']['mean_percentile']:.3f} |")


if __name__ == "__main__":
    main()
