"""Train the runs of a comparison: every model for every seed, each saved as soon as it finishes.

    python run_recbole_genair.py --compare --models=SASRec,SASRecGenAIR --dataset=ml-100k --seeds=3

Each (model, seed) run is saved as JSON under <output>/runs/ as soon as it finishes, so a rerun with
the same output folder skips finished runs; a run in progress is locked, so several processes share
the work (each trains the runs no other has taken): `--workers=N` starts N such processes, each with
the machine's cores / N threads. The report (tables, significance, plots) is written by
`recbole_genair.evaluation.compare.write_report`.
"""
import logging
from pathlib import Path

from recbole_genair.config import Config
from recbole_genair.evaluation.compare import analyse, parse_seeds, write_report
from recbole_genair.evaluation.group_metrics import GROUP_METRICS
from recbole_genair.evaluation.run_records import finished_seeds, record_path, runs_folder, write_record
from recbole_genair.locking import LockHeld, ProcessLock, describe_holder
from recbole_genair.model.all_positions import train_objective
from recbole_genair.processes import run_in_processes
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.threads import check_count, given_threads, threads_per_process
from recbole_genair.utils import get_model

logger = logging.getLogger("recbole_genair.compare")


def run_comparison(models, dataset, seeds, output, config_file_list=None, config_dict=None, cmd_args=None,
                   extra_test_modes=(), workers=1):
    """Train and evaluate every model for every seed (skipping finished runs); write the report.

    Runs that another process is training are skipped too; the report covers the runs finished when
    this process ends (the last process to end writes the complete one). `workers` > 1 trains that
    many runs at once, one process each, with the machine's cores shared among them (`threads`).
    """
    check_models(models, dataset, config_file_list, config_dict, cmd_args)
    workers = check_count(workers, "workers")
    output = Path(output)
    runs_folder(output).mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(seeds)
    base = dict(config_dict or {})
    metrics = list(base.get("metrics") or ["Hit", "NDCG", "MRR"])
    metrics += [m for m in GROUP_METRICS if m not in metrics]
    job = (models, seeds, dataset, output, config_file_list, {**base, "metrics": metrics}, list(cmd_args or []),
           tuple(extra_test_modes or ()))
    if workers == 1:
        train_runs(*job)
    else:
        job[5]["threads"] = threads_per_process(workers, given_threads(config_file_list, base, cmd_args), "workers")
        run_workers(job, workers)
    # a comparison split by seed over several processes: the last to end reports every seed finished
    return write_report(output, models, finished_seeds(output, models, seeds), extra_test_modes)


def check_models(models, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """Refuse, before any model trains, a name no model has and a model that cannot train as asked (e.g.
    `train_mode: all_positions` for NARMGenAIR): each model's settings are built and its training mode checked."""
    for model in models:
        get_model(model)
    for model in models:
        config = Config(model, dataset, config_file_list, dict(config_dict or {}), cmd_args=cmd_args)
        train_objective(config.model_class, config["train_mode"])


class WorkerFailed(RuntimeError):
    """A worker process of a comparison ended with an error."""


def run_workers(job, workers):
    """`train_runs(*job)` in `workers` processes at once; they share the runs through the per-run locks."""
    failed = run_in_processes(train_runs, [job] * workers, [f"worker {i}" for i in range(workers)])
    if failed:
        raise WorkerFailed(f"{len(failed)} of {workers} workers failed ({', '.join(failed)}); their errors are printed "
                           f"above. The runs they finished are saved; rerun the same command to train the rest.")


def train_runs(models, seeds, dataset, output, config_file_list, config_dict, cmd_args, extra_test_modes):
    """Train every (model, seed) that has no record in `output` and that no other process is training."""
    for model in models:
        for seed in seeds:
            path = record_path(output, model, seed)
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
                    _run_one(model, seed, seeds, dataset, output, path, config_file_list, config_dict, cmd_args,
                             extra_test_modes)
            finally:
                lock.path.unlink(missing_ok=True)  # a process that opened it before sees the JSON and skips
                lock.release()


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
        "checkpoint": result["saved_model_file"], "training": result["training"], "settings": result["settings"],
        "threads": result["threads"], **result["analysis"],
    }
    write_record(path, record)
