"""A backbone's measured result under the defaults, to hold a single run against (`props/reference/<dataset>.yaml`).

A single run prints how its test NDCG@10 compares with its RecBole backbone's (e.g. SASRec's for
SASRecGenAIR) trained with the same settings over several seeds. The file is written from a comparison's
run records, never by hand:

    python -m recbole_genair.evaluation.reference --runs=results/defaults-ml-100k --model=SASRec --dataset=ml-100k

A run whose settings differ from the reference's in any of `REFERENCE_KEYS` is told so instead.
"""
import argparse
import json
import statistics
from pathlib import Path

import yaml

from recbole_genair.evaluation.run_records import model_records
from recbole_genair.paths import PROPS_DIR

# Settings that change what a backbone reaches; a run held against the reference must share them.
REFERENCE_KEYS = ("train_mode", "stopping_step", "epochs", "all_positions_stride", "train_batch_size", "learning_rate",
                  "loss_type", "hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads", "num_layers",
                  "MAX_ITEM_LIST_LENGTH", "valid_metric", "eval_mode")
METRIC = "ndcg@10"


def run_settings(config):
    """The values of `REFERENCE_KEYS` in a run's config (plain types, for JSON and YAML)."""
    values = {key: config[key] for key in REFERENCE_KEYS if key != "eval_mode"}
    values["eval_mode"] = config["eval_args"]["mode"]["test"]
    return json.loads(json.dumps(values, default=str))


def reference_path(dataset, folder=None):
    return Path(folder or PROPS_DIR / "reference") / f"{dataset}.yaml"


def load_reference(dataset, folder=None):
    """{model: entry} of the dataset's reference file; {} when there is none."""
    path = reference_path(dataset, folder)
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def backbone_of(model_class):
    """The RecBole class a model is built on (SASRec for SASRecGenAIR); the class's own name for RecBole's models."""
    for cls in model_class.__mro__:
        if cls.__module__.startswith("recbole.model."):
            return cls.__name__
    return model_class.__name__


def reference_line(model, backbone, settings, test_result, reference, seed=None):
    """What to print after a single run of `model`: its test NDCG@10 against the backbone's reference, or why not."""
    entry = reference.get(backbone)
    if not entry:
        return None
    differ = [f"{k} {settings.get(k)!r} (reference {v!r})" for k, v in entry["settings"].items() if settings.get(k) != v]
    values = entry["test"][METRIC]
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    measured = f"{backbone} under the defaults: test NDCG@10 {mean:.4f} ± {sd:.4f} over seeds {entry['seeds']} ({entry['source']})"
    if differ:
        return f"{measured}; not comparable with this run, whose settings differ: {', '.join(differ)}"
    mine = test_result.get(METRIC)
    if model == backbone:
        return f"{measured}; this run (seed {seed}): {mine:.4f}"
    return f"{measured}; this run of {model}: {mine:.4f} ({mine / mean:.2f}x {backbone})"


def build_reference(runs_folder, model, source=None):
    """The reference entry of `model` from a comparison's run records (each must hold its settings)."""
    records = model_records(runs_folder, model)
    if not records:
        raise FileNotFoundError(f"no run records of {model} in {runs_folder}/runs: run the comparison first")
    missing = [r["seed"] for r in records if "settings" not in r]
    if missing:
        raise ValueError(f"the records of {model} seeds {missing} in {runs_folder}/runs hold no settings (written before "
                         f"records kept them): train them again")
    settings = {json.dumps(r["settings"], sort_keys=True) for r in records}
    if len(settings) > 1:
        raise ValueError(f"the records of {model} in {runs_folder}/runs were trained with different settings; "
                         f"a reference needs one setting over several seeds")
    records.sort(key=lambda r: r["seed"])
    return {"settings": records[0]["settings"], "seeds": [r["seed"] for r in records],
            "test": {METRIC: [round(r["test"][METRIC], 6) for r in records]},
            "source": source or str(runs_folder)}


def write_reference(runs_folder, model, dataset, folder=None):
    """Add (or replace) `model`'s entry in the dataset's reference file; returns the file's path."""
    reference = load_reference(dataset, folder)
    reference[model] = build_reference(runs_folder, model)
    path = reference_path(dataset, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# Written by python -m recbole_genair.evaluation.reference from run records; do not edit by hand.\n")
        yaml.safe_dump(reference, f, sort_keys=True)
    tmp.replace(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--runs", required=True, help="a --compare output folder")
    parser.add_argument("--model", required=True, help="the backbone whose runs make the reference, e.g. SASRec")
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args(argv)
    print(f"wrote {write_reference(args.runs, args.model, args.dataset)}")


if __name__ == "__main__":
    main()
