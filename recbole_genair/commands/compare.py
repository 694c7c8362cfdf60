"""Train the runs of a comparison: every model for every seed, each saved as soon as it finishes.

    python run_recbole_genair.py --compare --models=SASRec,SASRecGenAIR --dataset=ml-100k --seeds=3

Each (model, seed) run is saved as JSON under <output>/runs/ as soon as it finishes, so a rerun with
the same output folder skips finished runs; a run in progress is locked, so several processes started
with the same command share the work (each trains the runs no other has taken). The report (tables,
significance, plots) is written by `recbole_genair.evaluation.compare.write_report`.
"""
import json
import logging
import os
from pathlib import Path

from recbole_genair.evaluation.compare import analyse, parse_seeds, write_report
from recbole_genair.evaluation.group_metrics import GROUP_METRICS
from recbole_genair.locking import LockHeld, ProcessLock, describe_holder
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.utils import get_model

logger = logging.getLogger("recbole_genair.compare")


def run_comparison(models, dataset, seeds, output, config_file_list=None, config_dict=None, cmd_args=None,
                   extra_test_modes=()):
    """Train and evaluate every model for every seed (skipping finished runs); write the report.

    Runs that another process is training are skipped too; the report covers the runs finished when
    this process ends (the last process to end writes the complete one).
    """
    for model in models:  # a typo fails now, not after the models before it have trained
        get_model(model)
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
            lock = ProcessLock(path.with_suffix(".lock"))
            try:
                lock.acquire()
            except LockHeld as held:
                logger.info(f"skipping {model} seed {seed}: {describe_holder(held.holder)} is training it")
                continue
            try:
                if not path.exists():  # finished by another process between the check and the lock
                    _run_one(model, seed, seeds, dataset, output, path, config_file_list,
                             {**base, "metrics": metrics}, cmd_args, extra_test_modes)
            finally:
                lock.path.unlink(missing_ok=True)  # a process that opened it before sees the JSON and skips
                lock.release()
    return write_report(output, models, seeds, extra_test_modes)


def _run_one(model, seed, seeds, dataset, output, path, config_file_list, base, cmd_args, extra_test_modes):
    settings = {**base, "seed": seed, "checkpoint_dir": str(output / "checkpoints")}
    result = run_recbole_genair(
        model, dataset, config_file_list, settings, cmd_args=cmd_args, saved=True, extra_test_modes=extra_test_modes,
        inspect=lambda c, m, tr, te, first=(seed == seeds[0]): analyse(c, m, tr, te, scatter=first),
    )
    record = {
        "model": model, "seed": seed, "dataset": dataset,
        "valid": dict(result["best_valid_result"]), "test": dict(result["test_result"]),
        "eval_mode": result["eval_mode"], "extra_test": result["extra_test_results"],
        "checkpoint": result["saved_model_file"], "training": result["training"], **result["analysis"],
    }
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
