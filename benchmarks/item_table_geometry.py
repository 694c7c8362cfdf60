"""Geometry of trained item tables: norms, shared offset, entropy, and the position embeddings beside them.

    python benchmarks/item_table_geometry.py results/compare-amazon-office/checkpoints/*.pth

For each checkpoint (written by our run function) it prints the model, seed, mean L2 norm of the item
rows, the norm of their mean vector relative to that (a shared offset that full-ranking softmax scores
ignore but that enters the sequence encoder), the matrix entropy (GenAIR eq. 25) of the rows as they are
and centred, and for backbones with learned position embeddings (SASRec, BERT4Rec) the mean norm of
those and its ratio to the item norm: the share of order information in the encoder's input.
Run by hand; the numbers go in the README's reading of the results.
"""
import argparse
import logging
import os

import torch

from recbole_genair.evaluation.entropy import matrix_entropy
from recbole_genair.checkpoint import read_checkpoint
from recbole_genair.quick_start import load_data_and_model


def geometry(model):
    """Dict of the measures above for one trained model."""
    model.eval()
    with torch.no_grad():
        rows = model.item_embedding.weight[1:model.n_items].double()
        norm = rows.norm(dim=1).mean().item()
        out = {
            "item_norm": norm,
            "offset_ratio": (rows.mean(0).norm() / norm).item(),
            "entropy": matrix_entropy(rows),
            "entropy_centred": matrix_entropy(rows - rows.mean(0)),
        }
        if hasattr(model, "position_embedding"):
            pos = model.position_embedding.weight.double().norm(dim=1).mean().item()
            out.update(position_norm=pos, position_to_item=pos / norm)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (.pth) written by run_recbole_genair")
    args = parser.parse_args()
    newest = {}  # (folder, model, seed) -> checkpoint; a rerun after a killed run leaves two: keep the newer
    for path in sorted(args.checkpoints, key=os.path.getmtime):
        config = read_checkpoint(path, trust=True)["config"]  # this repository's own runs
        folder = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
        newest[(folder, config["model"], config["seed"])] = path
    rows = []
    for (folder, name, seed), path in newest.items():
        config, model, *_ = load_data_and_model(path, trust=True)
        logging.getLogger().handlers.clear()  # the run's logger would echo every later line
        rows.append((folder, name, seed, geometry(model)))
    print("| folder | model | seed | item norm | offset / norm | entropy | entropy centred | position norm | position / item |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder, model, seed, g in sorted(rows, key=lambda r: r[:3]):
        pos = (f"{g['position_norm']:.3f} | {g['position_to_item']:.2f}" if "position_norm" in g else "n/a | n/a")
        print(f"| {folder} | {model} | {seed} | {g['item_norm']:.3f} | {g['offset_ratio']:.2f} | {g['entropy']:.2f} | "
              f"{g['entropy_centred']:.2f} | {pos} |")


if __name__ == "__main__":
    main()
