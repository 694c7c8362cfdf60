"""Regenerate the tiny RecBole-format test dataset `genair-test` (deterministic)."""
import hashlib
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "genair-test"
N_USERS, N_ITEMS, DIM = 50, 60, 24
CATEGORIES = ["Pens", "Paper", "Desk Lamps", "Staplers", "Notebooks", "Binders"]
BRANDS = ["Acme", "Lumo", "Penna", "", "Inkwell"]


def main():
    rng = np.random.default_rng(7)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for user in range(1, N_USERS + 1):
        n = rng.integers(6, 13)
        # users prefer a block of items so that co-occurrence has structure
        centre = rng.integers(1, N_ITEMS + 1)
        items = (centre + rng.integers(-8, 9, size=n)) % N_ITEMS + 1
        start = 880000000 + int(rng.integers(0, 10**6))
        for k, item in enumerate(items):
            rows.append((user, int(item), int(rng.integers(1, 6)), start + 100 * k))
    with open(OUT / "genair-test.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in rows:
            f.write("%d\t%d\t%d\t%d\n" % r)
    used = sorted({r[1] for r in rows})
    with open(OUT / "genair-test.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tcategory:token_seq\tbrand:token\tprice:float\n")
        for item in range(1, N_ITEMS + 1):
            title = "" if item % 17 == 0 else f"Office item {item} {CATEGORIES[item % 6].lower()}"
            f.write(f"{item}\t{title}\t{CATEGORIES[item % 6]}\t{BRANDS[item % 5]}\t{1.5 * item:.2f}\n")
    vectors = rng.normal(size=(len(used), DIM))
    order = rng.permutation(len(used))  # file order differs from id order on purpose
    with open(OUT / "genair-test.itememb", "w", encoding="utf-8") as f:
        f.write("iid:token\titem_emb:float_seq\n")
        for i in order:
            f.write(f"{used[i]}\t" + " ".join(f"{v:.6f}" for v in vectors[i]) + "\n")
    # view widths, as the archetype preprocessor writes them (first half prefill, second half decoding),
    # with the checksum of the file they describe
    meta = {"views": {"prefill": DIM // 2, "decoding": DIM // 2}, "order": ["prefill", "decoding"],
            "itememb_sha256": hashlib.sha256((OUT / "genair-test.itememb").read_bytes()).hexdigest(),
            "rows": len(used), "columns": DIM}
    (OUT / "genair-test.itememb.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
