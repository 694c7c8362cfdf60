"""Run records of a comparison: `<output>/runs/<model>-seed<seed>.json`, one per finished (model, seed).

Written by `recbole_genair.commands.compare` as soon as a run finishes (atomically: a reader sees the whole file or
none), read by the report, the reference builder and the documentation's tables.
"""
import json
import os
from pathlib import Path


def runs_folder(output):
    """The folder of `output`'s run records."""
    return Path(output) / "runs"


def record_path(output, model, seed):
    """Where the record of (`model`, `seed`) of the comparison in `output` is."""
    return runs_folder(output) / f"{model}-seed{seed}.json"


def write_record(path, record):
    """Write `record` (a JSON-ready dict) to `path` atomically."""
    path = Path(path)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def model_records(output, model):
    """Every record of `model` in `output`, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(runs_folder(output).glob(f"{model}-seed*.json"))]


def load_runs(output, models, seeds):
    """{(model, seed): record} of the finished runs among `models` x `seeds`."""
    runs = {}
    for model in models:
        for seed in seeds:
            path = record_path(output, model, seed)
            if path.exists():
                runs[(model, seed)] = json.loads(path.read_text())
    return runs


def finished_seeds(output, models, seeds):
    """`seeds`, plus every seed for which each of `models` has a finished run in `output` (e.g. trained by
    another process of a comparison split by seed), in ascending order."""
    found = {}
    for path in runs_folder(output).glob("*-seed*.json"):
        model, _, seed = path.stem.rpartition("-seed")
        if model in models and seed.lstrip("-").isdigit():
            found.setdefault(int(seed), set()).add(model)
    return sorted(set(seeds) | {seed for seed, done in found.items() if done >= set(models)})
