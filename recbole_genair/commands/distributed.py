"""Train one model on several processes (RecBole's torch.distributed path; gloo on CPUs, NCCL on GPUs).

    python run_recbole_genair.py --model=SASRecGenAIR --dataset=ml-100k --nproc=4
    # two hosts, two processes each: the same command on both, with the first host's address
    python run_recbole_genair.py --model=SASRecGenAIR --nproc=2 --world_size=4 --offset=0 --ip=10.0.0.1 --port=29500
    python run_recbole_genair.py --model=SASRecGenAIR --nproc=2 --world_size=4 --offset=2 --ip=10.0.0.1 --port=29500

Each process loads the dataset, takes its share of every training batch (`DistributedSampler`) and of the
evaluated users; gradients are averaged over all processes at each step, so a run on N processes trains
with the same global batch as one process. Rank 0 writes the checkpoint and logs; its result is returned.
"""
import socket

import torch.multiprocessing as mp

from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.threads import given_threads, threads_per_process

DISTRIBUTED_KEYS = ("nproc", "world_size", "offset", "ip", "port")


class RankFailed(RuntimeError):
    """A process of a distributed run died; the others were stopped."""


def distributed_settings(cmd_args):
    """{nproc, world_size, offset, ip, port} from `--key=value` pairs, or None for a one-process run."""
    given = dict(a[2:].split("=", 1) for a in cmd_args if a.startswith("--") and "=" in a)
    nproc = _count(given, "nproc", 1)
    world = _count(given, "world_size", nproc)
    if nproc < 1:
        raise SystemExit(f"error: --nproc={given['nproc']}: give at least 1 process for this host")
    if nproc == 1 and world <= 1:
        return None
    if world < nproc:
        raise SystemExit(f"error: --nproc={nproc} processes here cannot be more than --world_size={world} in all")
    offset = _count(given, "offset", 0)
    if world > nproc and "ip" not in given:
        raise SystemExit("error: a run over several hosts (--world_size > --nproc) needs --ip (and --port) of the "
                         "host that runs rank 0, the same on every host")
    return {"nproc": nproc, "world_size": world, "offset": offset, "ip": given.get("ip", "127.0.0.1"),
            "port": _count(given, "port", 0) if given.get("port") else _free_port()}


def _count(given, key, default):
    """`--key` as a whole number, or a `SystemExit` that names the flag and what it got."""
    value = given.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SystemExit(f"error: --{key}={value}: give a whole number (e.g. --{key}=2)") from None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, fn, settings, args, queue):
    result = fn(rank, settings, *args)
    if rank == 0 and queue is not None:
        queue.put(result)


def spawn_ranks(fn, settings, args=()):
    """Run `fn(local_rank, settings, *args)` in `settings['nproc']` processes; rank 0's return value.

    A process that dies stops the others and raises `RankFailed` naming it (no rank waits for it).
    """
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_rank_main, args=(fn, settings, args, queue), nprocs=settings["nproc"], join=True)
    except mp.ProcessExitedException as err:
        rank = err.error_index + settings["offset"]
        how = f"signal {err.signal_name}" if err.signal_name else f"exit code {err.exit_code}"
        raise RankFailed(f"rank {rank} of {settings['world_size']} died ({how}); the other processes on this host "
                         f"were stopped. Its log (log/ under the run folder) tells why.") from None
    except mp.ProcessRaisedException as err:
        rank = err.error_index + settings["offset"]
        raise RankFailed(f"rank {rank} of {settings['world_size']} failed; the other processes on this host were "
                         f"stopped. Its error:\n{err}") from None
    return None if queue.empty() else queue.get()


def _train_rank(rank, settings, model, dataset, config_file_list, cmd_args):
    rest = [a for a in cmd_args if a.split("=", 1)[0][2:] not in DISTRIBUTED_KEYS]
    result = run_recbole_genair(model, dataset, config_file_list, {**settings, "local_rank": rank}, cmd_args=rest)
    result.pop("analysis", None)
    return result


def run_distributed(model, dataset, config_file_list, cmd_args, settings):
    """Train `model` with `settings` (from `distributed_settings`); rank 0's result.

    Each process gets the machine's cores / `nproc` threads unless `threads` is given.
    """
    given = given_threads(config_file_list, {}, cmd_args)
    settings = {**settings, "threads": threads_per_process(settings["nproc"], given, "processes")}
    return spawn_ranks(_train_rank, settings, (model, dataset, config_file_list, list(cmd_args)))
