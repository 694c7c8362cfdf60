"""Options for new items on a cold split (issue 32): validation that chooses, test that reports, per variant.

    python benchmarks/summarise_cold.py results/cold-options/baseline results/cold-options/unseen-out ...

Each argument is a `--compare --cold_items=... --cold_valid_items=...` output folder (the folder's name is the
variant). Per variant and model, mean over seeds: epochs; validation NDCG@10, Cold NDCG@10 and Cold Hit@10 (the
held-out validation items, which choose); test NDCG@10, warm NDCG@10 (targets with training interactions),
Cold Hit@10 and Cold NDCG@10, and where the held-out test targets rank among all items (median rank, share in
the top 100), recomputed from each run's checkpoint as RecBole's full ranking scores it. Run by hand.
"""
import argparse
import json
import logging
import statistics
from pathlib import Path

import numpy as np

from cold_item_ranks import target_ranks
from recbole_genair.quick_start import load_data_and_model

COLUMNS = ("epochs", "valid NDCG@10", "valid Cold NDCG@10", "valid Cold Hit@10", "test NDCG@10", "warm NDCG@10",
           "warm Hit@10", "Cold Hit@10", "Cold NDCG@10", "cold median rank", "cold in top 100")


def run_row(record):
    """The table's columns for one run record."""
    _, model, dataset, _, _, test_data = load_data_and_model(record["checkpoint"], trust=True)  # this repository's own runs
    ranks, targets = target_ranks(model, test_data)
    cold = np.isin(targets, getattr(dataset, "cold_item_ids", np.array([], dtype=int)))
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)
    if abs(ndcg.mean() - record["test"]["ndcg@10"]) > 1e-3:
        raise SystemExit(f"{record['checkpoint']}: NDCG@10 from the ranks ({ndcg.mean():.4f}) differs from the "
                         f"record's ({record['test']['ndcg@10']:.4f}): not the model the record was tested on")
    valid = record["valid"]
    return {
        "epochs": record["training"]["epochs"],
        "valid NDCG@10": valid["ndcg@10"], "valid Cold NDCG@10": valid.get("coldndcg@10", float("nan")),
        "valid Cold Hit@10": valid.get("coldhit@10", float("nan")),
        "test NDCG@10": record["test"]["ndcg@10"], "warm NDCG@10": float(ndcg[~cold].mean()),
        "warm Hit@10": float((ranks[~cold] <= 10).mean()),
        "Cold Hit@10": float((ranks[cold] <= 10).mean()), "Cold NDCG@10": float(ndcg[cold].mean()),
        "cold median rank": float(np.median(ranks[cold])), "cold in top 100": float((ranks[cold] <= 100).mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="--compare output folders, one per variant")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print("| variant | model | seeds | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for folder in args.folders:
        per_model = {}
        for path in sorted(Path(folder, "runs").glob("*.json")):
            record = json.loads(path.read_text())
            per_model.setdefault(record["model"], []).append(run_row(record))
        for model, rows in per_model.items():
            cells = []
            for column in COLUMNS:
                values = [row[column] for row in rows]
                mean = statistics.mean(values)
                cells.append(f"{mean:.0f}" if column in ("epochs", "cold median rank") else
                             f"{mean:.1%}" if column == "cold in top 100" else f"{mean:.4f}")
            print(f"| {Path(folder).name} | {model} | {len(rows)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
