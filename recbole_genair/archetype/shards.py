"""One command for the whole catalogue on several processes (`shards: n`): n shards at once, then the merge.

Each shard is the pipeline's own `shard: i/n` run (its work folder, its lock, resumable), started in a
fresh process with the machine's cores / n threads (`threads`); when all have finished, the merge fits
PCA and writes the outputs as `merge: True` does. A shard that fails stops nothing the others finished:
rerunning the same command resumes every shard and merges.
"""
import logging

from recbole_genair.archetype.pipeline import run_archetype
from recbole_genair.archetype.settings import SettingsError
from recbole_genair.processes import run_in_processes
from recbole_genair.threads import check_count, threads_per_process

logger = logging.getLogger("recbole_genair.archetype")


def _run_shard(settings):
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s shard {settings['shard']} %(levelname)s %(message)s")
    run_archetype(settings)


def run_shards(settings):
    """Run `settings['shards']` shard processes at once, wait for them, then merge; the merge's summary."""
    count = check_count(settings["shards"], "shards")
    clashing = [k for k in ("shard", "merge", "pca_only") if settings.get(k)]
    if clashing:
        raise SettingsError(f"shards={count} starts and merges its own shards: leave out {', '.join(clashing)} "
                            f"(or drop shards to run one shard, the merge or PCA alone)")
    threads = threads_per_process(count, settings.get("threads"), "shards")
    logger.info(f"starting {count} shard processes, {threads} threads each")
    jobs = [({**settings, "shards": None, "shard": f"{i}/{count}", "threads": threads},) for i in range(count)]
    failed = run_in_processes(_run_shard, jobs, [f"shard {i}/{count}" for i in range(count)])
    if failed:
        raise SettingsError(f"{len(failed)} of {count} shards failed ({', '.join(failed)}; their errors are above); the "
                            f"items they finished are kept: rerun the same command to resume them and merge.")
    summary = run_archetype({**settings, "shards": None, "merge": True})
    summary["shards"] = count
    summary["threads_per_shard"] = threads
    return summary
