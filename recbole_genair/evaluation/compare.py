"""The comparison report: tables, significance, analysis of a trained model, plots.

The runs are trained by `recbole_genair.commands.compare.run_comparison`, which saves each (model,
seed) as JSON under <output>/runs/; this module reads them and writes the report. Every LLM-enhanced
model is held against its RecBole backbone when that is in the list (SASRecGenAIR against SASRec,
GRU4RecGenAIR against GRU4Rec), any other model against the first one: the table gives the relative
change of the mean and marks differences that a two-sided paired t-test across seeds finds
significant (p < 0.05, as in the GenAIR paper). With `extra_test_modes` (e.g. `uni100`, the papers'
100-negative protocol) the same trained models were evaluated again: one more table per protocol
(`table_uni100.md`).
"""
import csv
import json
import logging
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from recbole_genair.data.popularity import item_popularity
from recbole_genair.evaluation.entropy import entropy_by_popularity, head_tail_scatter
from recbole_genair.evaluation.run_records import load_runs

logger = logging.getLogger("recbole_genair.compare")
TABLE_METRICS = ["ndcg@10", "hit@10", "headndcg@10", "tailndcg@10", "coldndcg@10", "coldhit@10"]


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


def reference_for(model, models):
    """The model a row is held against: an LLM-enhanced model's RecBole backbone if listed, else the first.

    RecBole's own models (and the first model) are references themselves.
    """
    from recbole_genair.utils import get_model

    try:
        cls = get_model(model)
    except (ValueError, AttributeError, ImportError):
        return models[0]
    if not cls.__module__.startswith("recbole_genair"):
        return model
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("recbole.") and base.__name__ in models:
            return base.__name__
    return models[0]


MAX_SEED_COUNT = 100


def parse_seeds(seeds):
    """`3` -> the first three seeds from 2020; `1,5,9` -> those seeds; `2022,` -> seed 2022 alone."""
    text = str(seeds).strip()
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    count = int(text)
    if not 1 <= count <= MAX_SEED_COUNT:
        raise ValueError(
            f"--seeds={text} asks for {count} seeds (a single number is a count, from seed 2020); "
            f"give 1 to {MAX_SEED_COUNT}, or list seeds with commas: --seeds={text}, runs seed {text} alone"
        )
    return [2020 + i for i in range(count)]


def summarise(runs, models, seeds, metrics=TABLE_METRICS, protocol=None, reference=None):
    """Per model and metric: mean, std, relative change and paired test against the model's reference.

    `protocol`: one of the extra test protocols of the runs (e.g. "uni100"); None: the main test result.
    `reference`: hold every row against this one instead of `reference_for`'s choice.
    """
    def result(model, seed):
        run = runs[(model, seed)]
        return run["test"] if protocol is None else run.get("extra_test", {}).get(protocol, {})

    summary = {}
    fixed_reference = reference
    for model in models:
        reference = fixed_reference or reference_for(model, models)
        row = {"reference": reference}
        for metric in metrics:
            by_seed = {s: result(model, s).get(metric, float("nan")) for s in seeds if (model, s) in runs}
            values = list(by_seed.values())
            mean = float(np.mean(values)) if values else float("nan")
            # Δ and the test use the seeds both rows have: a 1-seed row is held against that seed only.
            paired = [s for s in by_seed if (reference, s) in runs]
            mine = [by_seed[s] for s in paired]
            ref = [result(reference, s).get(metric, float("nan")) for s in paired]
            ref_mean = float(np.mean(ref)) if ref else float("nan")
            p, significant = (
                paired_significance(mine, ref) if model != reference else (float("nan"), False)
            )
            row[metric] = {
                "mean": mean, "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"), "values": values,
                "rel_change": (float(np.mean(mine)) / ref_mean - 1.0) if model != reference and ref_mean else float("nan"),
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
    references = sorted({summary[m].get("reference", models[0]) for m in models} - {None}, key=models.index)
    against = (f"against {references[0]}" if len(references) == 1
               else "against the model's RecBole backbone (" + ", ".join(references) + ")")
    lines = [
        f"Test metrics, mean ± std over {n_seeds} seeds; {protocol}; leave-one-out split by time. "
        f"Δ: relative change of the mean {against}; * : p < 0.05 in a two-sided paired t-test "
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
            if not math.isnan(m["rel_change"]):
                cell += f" ({m['rel_change']:+.1%}{'*' if m['significant'] else ''})"
            cells.append(cell)
        seeds_run = max(len(summary[model][metric]["values"]) for metric in metrics)
        name = model if seeds_run >= n_seeds else f"{model} ({seeds_run} of {n_seeds} seeds)"
        params = summary[model]["trainable_params"]
        flops = summary[model]["flops_per_user"]
        cells.append(f"{params:,}" if params is not None else "n/a")
        cells.append(f"{flops / 1e6:.2f} M" if flops is not None else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_report(variants, model, seeds, output, extra_test_modes=()):
    """One table of `model`'s runs from several comparison folders (one per ablation setting).

    `variants`: {label: folder}; the first label is the reference (e.g. `full=results/compare-x`).
    `folder:Model` takes another model's runs for that row, e.g. the backbone as the reference
    (`GRU4Rec=results/compare-x:GRU4Rec`). Rows are labels; Δ and the paired t-test are against the
    first. Writes `ablation.md` (and `ablation_<mode>.md` per extra protocol) into `output`.
    """
    labels = list(variants)
    runs = {}
    for label, spec in variants.items():
        folder, row_model = str(spec), model
        head, _, tail = folder.rpartition(":")
        if head and tail.isidentifier():
            folder, row_model = head, tail
        for (_, seed), run in load_runs(folder, [row_model], seeds).items():
            runs[(label, seed)] = run
    missing = [f"{label} seed {s}" for label in labels for s in seeds if (label, s) not in runs]
    if missing:
        logger.warning(f"ablation table without {len(missing)} run(s): {', '.join(missing)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tables = {}
    for mode in [None, *(extra_test_modes or ())]:
        summary = summarise(runs, labels, seeds, protocol=mode, reference=labels[0])
        text = markdown_table(summary, labels, mode or next(iter(runs.values()))["eval_mode"], len(seeds))
        text = text.replace("| model |", f"| {model} |", 1)
        tables[mode or "main"] = text
        (output / ("ablation.md" if mode is None else f"ablation_{mode}.md")).write_text(text + "\n")
    return tables


def training_table(runs, models, seeds):
    """How each model's runs ended (from the run records): mode, epochs, best epoch, early stopping, time."""
    rows = []
    for model in models:
        done = [runs[(model, s)]["training"] for s in seeds if runs.get((model, s), {}).get("training")]
        if not done:
            continue
        modes = "/".join(sorted({str(t["train_mode"]) for t in done}))
        batches = "/".join(str(b) for b in sorted({t["train_batch_size"] for t in done}))
        epochs = [t["epochs"] for t in done]
        best = [t["best_epoch"] + 1 for t in done if t["best_epoch"] is not None]
        rows.append(f"| {model} | {modes} | {batches} | {_span(epochs)} | {_span(best)} | "
                    f"{sum(t['stopped_early'] for t in done)}/{len(done)} | "
                    f"{statistics.median(t['seconds_per_epoch'] for t in done):.1f} | "
                    f"{statistics.mean(t['train_seconds'] for t in done) / 60:.1f} |")
    if not rows:
        return ""
    return "\n".join([
        "Training (per run, from the run records): epochs run and the epoch whose weights were tested (1-based), "
        "how many runs early stopping ended (the rest reached `epochs`), median seconds per training epoch, "
        "mean training minutes (validation excluded).", "",
        "| model | train_mode | batch | epochs | best epoch | early stopped | s/epoch | train min |",
        "|---|---|---|---|---|---|---|---|", *rows])


def _span(values):
    return "-" if not values else (str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}")


def report_table(runs, models, seeds, summary=None):
    """The report's markdown (`table.md`): the test table and the training table of the finished runs."""
    summary = summarise(runs, models, seeds) if summary is None else summary
    table = markdown_table(summary, models, next(iter(runs.values()))["eval_mode"], len(seeds))
    training = training_table(runs, models, seeds)
    return table + ("\n\n" + training if training else "")


def write_report(output, models, seeds, extra_test_modes=()):
    from recbole_genair.evaluation.plots import plot_entropy, plot_group_ndcg, plot_scatter

    output = Path(output)
    runs = load_runs(output, models, seeds)
    if not runs:
        raise RuntimeError(f"no finished runs in {output / 'runs'}")
    eval_mode = next(iter(runs.values()))["eval_mode"]
    summary = summarise(runs, models, seeds)
    with open(output / "results.csv", "w", newline="") as f:
        metric_names = sorted({k for r in runs.values() for k in r["test"]})
        extra_names = sorted({(mode, k) for r in runs.values() for mode, res in r.get("extra_test", {}).items()
                              for k in res})
        writer = csv.writer(f)
        writer.writerow(["model", "seed", *[f"test_{m}" for m in metric_names],
                         *[f"test_{mode}_{m}" for mode, m in extra_names], "trainable_params", "flops_per_user"])
        for (model, seed), r in sorted(runs.items(), key=lambda kv: (models.index(kv[0][0]), kv[0][1])):
            extra = r.get("extra_test", {})
            writer.writerow([model, seed, *[r["test"].get(m) for m in metric_names],
                             *[extra.get(mode, {}).get(m) for mode, m in extra_names],
                             r["trainable_params"], r["flops_per_user"]])
    (output / "summary.json").write_text(json.dumps({"eval_mode": eval_mode, "seeds": seeds, "models": summary}, indent=1))
    table = report_table(runs, models, seeds, summary)
    (output / "table.md").write_text(table + "\n")
    extra_tables = {}
    for mode in extra_test_modes or ():
        if not any(mode in r.get("extra_test", {}) for r in runs.values()):
            continue
        extra = summarise(runs, models, seeds, protocol=mode)
        extra_tables[mode] = markdown_table(extra, models, mode, len(seeds))
        extra_tables[mode] += ("\nSame trained models as the full-ranking table (early stopping on full-ranking "
                               "validation NDCG@10); the negatives are drawn from each run's seed.")
        (output / f"table_{mode}.md").write_text(extra_tables[mode] + "\n")
    scatter = {m: runs[(m, seeds[0])].get("scatter") for m in models if (m, seeds[0]) in runs}
    plots = [plot_group_ndcg(summary, models, output / "ndcg_by_group.png"),
             plot_entropy(summary, models, output / "entropy_by_quintile.png"),
             plot_scatter(scatter, output / "head_tail_scatter.png")]
    print(table)
    for mode, text in extra_tables.items():
        print(f"\n{mode}:\n{text}")
    return {"table": table, "summary": summary, "extra_tables": extra_tables, "plots": [str(p) for p in plots if p]}
