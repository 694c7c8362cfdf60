"""How much next-item signal the LLM item vectors carry on their own, before any training.

    python benchmarks/probe_itememb.py --dataset=amazon-office --data_path=$HOME/data/amazon-office

Leave-one-out by time as in the comparisons (last item test): each test user's query is the item
just before the target (the last one the user is known to have interacted with). Items are ranked by
cosine similarity of their `.itememb` vectors to the query's (prefill view, decoding view, both),
against popularity and the count of times an item was next to the query in the training part of
the sequences (validation and test items excluded). Full ranking over all items except the query; NDCG@10 and
Hit@10. A diagnostic for the archetype vectors, run by hand; it trains nothing.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_sequences(path):
    with open(path, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        u, i, t = header.index("user_id"), header.index("item_id"), header.index("timestamp")
        events = defaultdict(list)
        for line in f:
            row = line.rstrip("\n").split("\t")
            events[row[u]].append((float(row[t]), row[i]))
    return {user: [item for _, item in sorted(ev, key=lambda e: e[0])] for user, ev in events.items()}


def read_itememb(path):
    with open(path, encoding="utf-8") as f:
        f.readline()
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return {token: np.array(vec.split(" "), dtype=np.float64) for token, vec in rows}


def ranking_metrics(scores, targets, k=10):
    """scores: users x items (query already excluded with -inf); targets: column per user."""
    target_scores = scores[np.arange(len(targets)), targets]
    rank = (scores > target_scores[:, None]).sum(axis=1)  # 0-based, ties in the target's favour
    hit = rank < k
    return {"ndcg@10": float(np.mean(np.where(hit, 1.0 / np.log2(rank + 2), 0.0))), "hit@10": float(hit.mean())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    args = parser.parse_args()
    folder = Path(args.data_path or Path(__file__).resolve().parents[1] / "dataset" / args.dataset)
    sequences = read_sequences(folder / f"{args.dataset}.inter")
    vectors = read_itememb(folder / f"{args.dataset}.itememb")
    meta_path = folder / f"{args.dataset}.itememb.json"
    views_meta = json.loads(meta_path.read_text())["views"] if meta_path.exists() else None
    widths = [views_meta["prefill"], views_meta["decoding"]] if views_meta else None
    items = sorted(vectors)
    index = {item: n for n, item in enumerate(items)}
    table = np.stack([vectors[i] for i in items])

    popularity = np.zeros(len(items))
    cooc = np.zeros((len(items), len(items)), dtype=np.float32)
    queries, targets = [], []
    for seq in sequences.values():
        if len(seq) < 3:
            continue
        train = [index[i] for i in seq[:-2]]  # validation and test items excluded from the statistics
        np.add.at(popularity, train, 1)
        for a, b in zip(train[:-1], train[1:]):
            cooc[a, b] += 1
            cooc[b, a] += 1
        queries.append(index[seq[-2]])
        targets.append(index[seq[-1]])
    queries, targets = np.array(queries), np.array(targets)

    def cosine_scores(x):
        x = x - x.mean(axis=0)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x[queries] @ x.T

    views = {"LLM vectors, both views": table}
    if widths:
        views["LLM vectors, prefill view"] = table[:, : widths[0]]
        views["LLM vectors, decoding view"] = table[:, widths[0]:]
    rng = np.random.default_rng(0)
    scorers = {
        "random": rng.random((len(queries), len(items))),
        "popularity (training part)": np.tile(popularity, (len(queries), 1)),
        "neighbours of the query in training sequences": cooc[queries] + 1e-6 * popularity,
        **{name: cosine_scores(x) for name, x in views.items()},
    }
    print(f"{args.dataset}: {len(queries)} test users, {len(items)} items; query = the item before the target")
    print("| scorer | NDCG@10 | Hit@10 |\n|---|---|---|")
    for name, scores in scorers.items():
        scores = np.array(scores, dtype=np.float64)
        scores[np.arange(len(queries)), queries] = -np.inf
        m = ranking_metrics(scores, targets)
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['hit@10']:.4f} |")


if __name__ == "__main__":
    main()
