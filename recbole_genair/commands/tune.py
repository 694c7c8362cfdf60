"""Hyper-parameter search with RecBole's own `HyperTuning` (hyperopt), through our run function.

    python run_recbole_genair.py --tune --model=SASRecGenAIR --dataset=ml-100k \
        --params_file=props/tuning/genair.hyper --algo=exhaustive --max_evals=126

Every trial trains on the training split and is scored on the validation split (`valid_metric`);
the test split is only reported. Writes <output>/trials.csv, <output>/trials.md and the best
configuration as <output>/best.yaml (ready for --config_files).
"""
import csv
import json
from pathlib import Path

import yaml

from recbole_genair.quick_start import run_recbole_genair


def run_tuning(model, dataset, params_file, output, config_file_list=None, config_dict=None, cmd_args=None,
               algo="exhaustive", max_evals=100, early_stop=10):
    """Search `params_file`'s space for `model` on `dataset`; write trials.csv, trials.md and best.yaml to `output`."""
    from recbole.trainer.hyper_tuning import HyperTuning

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    base = dict(config_dict or {})
    trials = []

    def objective(params, fixed_config_file_list):
        result = run_recbole_genair(model, dataset, fixed_config_file_list, {**base, **params}, cmd_args=cmd_args,
                                    saved=False, verbose=False)
        trials.append({"params": dict(params), "valid_score": result["best_valid_score"],
                       "valid": dict(result["best_valid_result"]), "test": dict(result["test_result"])})
        return result

    tuner = HyperTuning(objective, params_file=str(params_file), fixed_config_file_list=config_file_list,
                        algo=algo, max_evals=max_evals, early_stop=early_stop)
    tuner.run()
    write_trials(output, trials)
    best = {**base, **{k: _plain(v) for k, v in tuner.best_params.items()}, "model": model, "dataset": dataset}
    with open(output / "best.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(best, f, sort_keys=True)
    return {"best_params": tuner.best_params, "best_valid_score": tuner.best_score, "trials": trials}


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def write_trials(output, trials):
    names = sorted({k for t in trials for k in t["params"]})
    metrics = sorted({k for t in trials for k in t["test"]})
    with open(output / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "valid_score", *[f"test_{m}" for m in metrics]])
        for t in trials:
            writer.writerow([_plain(t["params"].get(n)) for n in names] + [t["valid_score"]] + [t["test"].get(m) for m in metrics])
    ranked = sorted(trials, key=lambda t: -t["valid_score"])
    lines = ["| " + " | ".join(names) + " | valid score | test " + " | test ".join(metrics) + " |",
             "|---" * (len(names) + 1 + len(metrics)) + "|"]
    for t in ranked:
        lines.append("| " + " | ".join(json.dumps(_plain(t["params"].get(n))) for n in names)
                     + f" | {t['valid_score']:.4f} | " + " | ".join(f"{t['test'].get(m, float('nan')):.4f}" for m in metrics) + " |")
    (output / "trials.md").write_text("\n".join(lines) + "\n")
