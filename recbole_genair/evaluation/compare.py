"""Models side by side: same split, evaluator and seeds; tables, significance, analysis and plots.

    python run_recbole_genair.py --compare --models=SASRec,SASRecGenAIR --dataset=ml-100k --seeds=3

Each (model, seed) run is saved as JSON under <output>/runs/ as soon as it finishes, so a rerun with
the same output folder skips finished runs. The first model is the reference: the table gives the
relative change of every other model's mean against it and marks differences that a two-sided
paired t-test across seeds finds significant (p < 0.05, as in the GenAIR paper).
"""
import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from recbole_genair.data.popularity import item_popularity
from recbole_genair.evaluation.entropy import entropy_by_popularity, head_tail_scatter
from recbole_genair.evaluation.group_metrics import GROUP_METRICS

logger = logging.getLogger("recbole_genair.compare")
TABLE_METRICS = ["ndcg@10", "hit@10", "headndcg@10", "tailndcg@10", "coldndcg@10"]


def paired_significance(values, reference, alpha=0.05):
    """(p-value, significant) of a two-sided paired t-test; not significant when undefined."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    if len(values) < 2 or len(values) != len(reference):
        return float("nan"), False
    diff = values - reference
    if np.allclose(diff, diff[0]):  # zero variance of the differences: the test is undefined
        return float("nan"), False
    p = float(stats.ttest_rel(values, reference).pvalue)
    return p, bool(p < alpha)


def item_table(model):
    """The item embeddings a model scores with (rows 0..n_items-1; BERT4Rec's mask row dropped)."""
    if hasattr(model, "item_table"):
        table = model.item_table()
    else:
        table = model.item_embedding.weight
    return table[: model.n_items].detach().float().cpu()


def inference_flops(model, test_data):
    """FLOPs per user of one full-ranking prediction (one test batch, averaged per user)."""
    batch = next(iter(test_data))[0]
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(batch)  # fill per-evaluation caches first (they cost nothing per user)
        with FlopCounterMode(display=False) as counter:
            model.full_sort_predict(batch)
    return counter.get_total_flops() / len(batch)


def analyse(config, model, train_data, test_data, scatter=False):
    """Parameters, FLOPs, entropy per popularity quintile (and the head/tail scatter) of a trained model."""
    popularity = item_popularity(train_data._dataset)
    table = item_table(model)
    out = {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops_per_user": inference_flops(model, test_data),
        "entropy_by_quintile": entropy_by_popularity(table, popularity, 5),
    }
    if scatter:
        out["scatter"] = head_tail_scatter(table, popularity)
    return out


def parse_seeds(seeds):
    """`3` -> the first three seeds from 2020; `1,5,9` -> those seeds."""
    text = str(seeds)
    if "," in text:
        return [int(s) for s in text.split(",") if s]
    return [2020 + i for i in range(int(text))]


def run_comparison(models, dataset, seeds, output, config_file_list=None, config_dict=None, cmd_args=None):
    """Train and evaluate every model for every seed (skipping finished runs); write the report."""
    from recbole_genair.quick_start import run_recbole_genair

    output = Path(output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(seeds)
    base = dict(config_dict or {})
    metrics = list(base.get("metrics") or ["Hit", "NDCG", "MRR"])
    metrics += [m for m in GROUP_METRICS if m not in metrics]
    for model in models:
        for seed in seeds:
            path = output / "runs" / f"{model}-seed{seed}.json"
            if path.exists():
                logger.info(f"skipping {model} seed {seed}: {path} exists")
                continue
            settings = {**base, "seed": seed, "metrics": metrics, "checkpoint_dir": str(output / "checkpoints")}
            result = run_recbole_genair(
                model, dataset, config_file_list, settings, cmd_args=cmd_args, saved=True,
                inspect=lambda c, m, tr, te, first=(seed == seeds[0]): analyse(c, m, tr, te, scatter=first),
            )
            record = {
                "model": model, "seed": seed, "dataset": dataset,
                "valid": dict(result["best_valid_result"]), "test": dict(result["test_result"]),
                "eval_mode": result["eval_mode"], **result["analysis"],
            }
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)
    return write_report(output, models, seeds)


def load_runs(output, models, seeds):
    runs = {}
    for model in models:
        for seed in seeds:
            path = Path(output) / "runs" / f"{model}-seed{seed}.json"
            if path.exists():
                runs[(model, seed)] = json.loads(path.read_text())
    return runs


def summarise(runs, models, seeds, metrics=TABLE_METRICS):
    """Per model and metric: mean, std, relative change and paired test against the first model."""
    reference = models[0]
    summary = {}
    for model in models:
        row = {}
        for metric in metrics:
            values = [runs[(model, s)]["test"].get(metric, float("nan")) for s in seeds if (model, s) in runs]
            ref = [runs[(reference, s)]["test"].get(metric, float("nan")) for s in seeds if (reference, s) in runs]
            mean = float(np.mean(values)) if values else float("nan")
            ref_mean = float(np.mean(ref)) if ref else float("nan")
            paired = [s for s in seeds if (model, s) in runs and (reference, s) in runs]  # same seeds only
            p, significant = (
                paired_significance([runs[(model, s)]["test"].get(metric, float("nan")) for s in paired],
                                    [runs[(reference, s)]["test"].get(metric, float("nan")) for s in paired])
                if model != reference else (float("nan"), False)
            )
            row[metric] = {
                "mean": mean, "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "values": values,
                "rel_change": (mean / ref_mean - 1.0) if model != reference and ref_mean else float("nan"),
                "p_value": p, "significant": significant,
            }
        first = next((runs[(model, s)] for s in seeds if (model, s) in runs), {})
        row["trainable_params"] = first.get("trainable_params")
        row["flops_per_user"] = first.get("flops_per_user")
        row["entropy_by_quintile"] = [
            float(np.mean(q)) for q in zip(*[runs[(model, s)]["entropy_by_quintile"] for s in seeds if (model, s) in runs])
        ]
        summary[model] = row
    return summary


def _fmt(x, digits=4):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(summary, models, eval_mode, n_seeds, metrics=TABLE_METRICS):
    protocol = ("full ranking over all items" if eval_mode == "full"
                else f"ranking the target against sampled negatives ({eval_mode})")
    lines = [
        f"Test metrics, mean ± std over {n_seeds} seeds; {protocol}; leave-one-out split by time. "
        f"Δ: relative change of the mean against {models[0]}; * : p < 0.05 in a two-sided paired t-test "
        f"across seeds. head = top 20% items by training interactions, cold = no training interaction.",
        "",
        "| model | " + " | ".join(m.replace("ndcg", "NDCG").replace("hit", "Hit").replace("head", "Head ")
                                   .replace("tail", "Tail ").replace("cold", "Cold ") for m in metrics)
        + " | params | FLOPs/user |",
        "|---" * (len(metrics) + 3) + "|",
    ]
    for model in models:
        cells = []
        for metric in metrics:
            m = summary[model][metric]
            cell = "n/a" if math.isnan(m["mean"]) else f"{_fmt(m['mean'])} ± {_fmt(m['std'])}"
            if model != models[0] and not math.isnan(m["rel_change"]):
                cell += f" ({m['rel_change']:+.1%}{'*' if m['significant'] else ''})"
            cells.append(cell)
        params = summary[model]["trainable_params"]
        flops = summary[model]["flops_per_user"]
        cells.append(f"{params:,}" if params is not None else "n/a")
        cells.append(f"{flops / 1e6:.2f} M" if flops is not None else "n/a")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(output, models, seeds):
    from recbole_genair.evaluation.plots import plot_entropy, plot_group_ndcg, plot_scatter

    output = Path(output)
    runs = load_runs(output, models, seeds)
    if not runs:
        raise RuntimeError(f"no finished runs in {output / 'runs'}")
    eval_mode = next(iter(runs.values()))["eval_mode"]
    summary = summarise(runs, models, seeds)
    with open(output / "results.csv", "w", newline="") as f:
        metric_names = sorted({k for r in runs.values() for k in r["test"]})
        writer = csv.writer(f)
        writer.writerow(["model", "seed", *[f"test_{m}" for m in metric_names], "trainable_params", "flops_per_user"])
        for (model, seed), r in sorted(runs.items(), key=lambda kv: (models.index(kv[0][0]), kv[0][1])):
            writer.writerow([model, seed, *[r["test"].get(m) for m in metric_names], r["trainable_params"], r["flops_per_user"]])
    (output / "summary.json").write_text(json.dumps({"eval_mode": eval_mode, "seeds": seeds, "models": summary}, indent=1))
    table = markdown_table(summary, models, eval_mode, len(seeds))
    (output / "table.md").write_text(table + "\n")
    scatter = {m: runs[(m, seeds[0])].get("scatter") for m in models if (m, seeds[0]) in runs}
    plots = [plot_group_ndcg(summary, models, output / "ndcg_by_group.png"),
             plot_entropy(summary, models, output / "entropy_by_quintile.png"),
             plot_scatter(scatter, output / "head_tail_scatter.png")]
    print(table)
    return {"table": table, "summary": summary, "plots": [str(p) for p in plots if p]}
