"""Base model vs the paper's GenAIR vs GenAIR with a variant, per dataset and backbone, from finished runs.

    python benchmarks/summarise_variants.py results/issue17-converged > results/issue17-converged/summary.md

Reads <folder>/<dataset>/paper/runs (base and GenAIR runs) and <folder>/<dataset>/residual/runs (the variant's
GenAIR runs); test NDCG@10 mean +- std over the seeds all three share, ratios of means with two-sided paired
t-tests over seeds, tail NDCG@10 means, epochs run. The README's "SASRecGenAIR beyond the paper" table.
"""
import json, sys
from pathlib import Path
import numpy as np
from scipy import stats

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/issue17-converged")
def load(folder, model):
    out = {}
    for f in sorted((folder / "runs").glob(f"{model}-seed*.json")):
        r = json.loads(f.read_text())
        out[r["seed"]] = r
    return out
print("| dataset | backbone | base NDCG@10 | paper GenAIR | vs base | item-residual | vs base | vs paper | tail NDCG@10 base / paper / residual | seeds | epochs (base / paper / residual) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in ("amazon-office", "ml-100k"):
    for b in ("SASRec", "GRU4Rec", "BERT4Rec"):
        base = load(root / d / "paper", b)
        paper = load(root / d / "paper", b + "GenAIR")
        resid = load(root / d / "residual", b + "GenAIR")
        seeds = sorted(set(base) & set(paper) & set(resid))
        if not seeds:
            continue
        def v(runs, key="ndcg@10"):
            return np.array([runs[s]["test"][key] for s in seeds])
        def ms(x):
            return f"{x.mean():.4f} ± {x.std(ddof=1):.4f}" if len(x) > 1 else f"{x.mean():.4f}"
        def rel(x, y):
            p = stats.ttest_rel(x, y).pvalue if len(x) > 1 else float("nan")
            return f"{x.mean() / y.mean():.2f}x (p={p:.3f})"
        tails = " / ".join(f"{v(r, 'tailndcg@10').mean():.4f}" for r in (base, paper, resid))
        ep = " / ".join(f"{np.mean([r[s]['training']['epochs'] for s in seeds]):.0f}" for r in (base, paper, resid))
        print(f"| {d} | {b} | {ms(v(base))} | {ms(v(paper))} | {rel(v(paper), v(base))} | {ms(v(resid))} | "
              f"{rel(v(resid), v(base))} | {rel(v(resid), v(paper))} | {tails} | {len(seeds)} | {ep} |")
