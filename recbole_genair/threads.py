"""How many threads each of the package's processes computes with (`threads`).

PyTorch starts one OpenMP thread per core in every process. Several processes on one machine (a
comparison's workers, archetype shards, a training beside an archetype pass) then run more busy
threads than there are cores, and OpenMP's waiting threads cost far more than the work shared:
four processes on 2 cores ran an all-position SASRec epoch in 88 s with PyTorch's threads and in
10 s with one thread each (docs/training.md, "Threads"). `threads: ~` therefore shares the cores among the
package's own processes: those one command starts (`--workers`, `--nproc`, `--shards`) and those
already computing on this machine, which register themselves in a folder of the temporary directory.
"""
import atexit
import logging
import os
import tempfile
from pathlib import Path

import torch
import yaml

logger = logging.getLogger("recbole_genair.threads")


class ThreadsError(ValueError):
    """A `threads`, `workers` or `shards` value that is not a count of at least 1."""


def available_cores():
    """Cores this process may run on (its CPU affinity, which a container or `taskset` may narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_count(value, setting):
    """`value` as an int >= 1; anything else is refused naming `setting`."""
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        count = int(value)
    except (TypeError, ValueError):
        raise ThreadsError(f"{setting}={value!r} is not a count: give a whole number of at least 1"
                           + (" (or ~ for the default)" if setting == "threads" else "")) from None
    if count < 1:
        raise ThreadsError(f"{setting}={count}: give at least 1 ({setting} below 1 would leave nothing to run)")
    return count


def given_threads(config_file_list, config_dict, cmd_args):
    """`threads` as the user gave it (command line, config_dict or YAML files, in RecBole's order), or None."""
    for arg in cmd_args or ():
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
            return None if value in ("~", "None", "none") else check_count(value, "threads")
    if config_dict.get("threads") is not None:
        return check_count(config_dict["threads"], "threads")
    for file in reversed(config_file_list or []):
        with open(file, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if isinstance(values, dict) and "threads" in values:
            return None if values["threads"] is None else check_count(values["threads"], "threads")
    return None


def registry_dir():
    """The folder where the package's computing processes on this machine register (one file per process id)."""
    return Path(tempfile.gettempdir()) / f"recbole_genair-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "processes"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def running_processes(folder=None):
    """Process ids of the package's other processes computing on this machine now (stale entries are removed)."""
    folder = Path(folder or registry_dir())
    if not folder.is_dir():
        return []
    pids = []
    for entry in folder.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        if _alive(pid):
            pids.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return sorted(pids)


def register_process(folder=None):
    """Record this process as computing until it exits, so that processes started later share the cores with it."""
    entry = Path(folder or registry_dir()) / str(os.getpid())
    if entry.exists():
        return entry
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.touch()
    except OSError:  # a read-only temporary directory: threads are still set, only sharing is not announced
        return None
    atexit.register(entry.unlink, missing_ok=True)
    return entry


def default_threads(processes=1, folder=None):
    """The machine's cores shared among `processes` started together and the package's processes already running."""
    others = len(running_processes(folder))
    return max(1, available_cores() // (processes + others))


def threads_per_process(processes, given=None, what="processes"):
    """Threads of each of `processes` processes one command starts together: `given` (checked), else the cores
    shared among them and the package's processes already running; warns when they would oversubscribe the cores.
    """
    threads = default_threads(processes) if given is None else check_count(given, "threads")
    warn_if_oversubscribed(processes, threads, what)
    return threads


def warn_if_oversubscribed(processes, threads, what="processes"):
    """Log a warning when `processes` x `threads` busy threads exceed the cores; returns the expected slowdown."""
    cores = available_cores()
    busy = processes * threads
    if busy <= cores:
        return 1.0
    slowdown = busy / cores
    logger.warning(f"{processes} {what} x {threads} threads = {busy} busy threads on {cores} cores: each process is "
                   f"expected to run at least {slowdown:.1f}x slower than with {max(1, cores // processes)} threads "
                   f"each (OpenMP's waiting threads cost more than that: 3.4x per epoch was measured with twice too many, "
                   f"docs/training.md, 'Threads'); "
                   f"give --threads={max(1, cores // processes)} or leave threads at ~.")
    return slowdown


def apply_threads(threads=None, folder=None):
    """Set PyTorch's (and OpenMP's) threads for this process before its heavy work; returns the count.

    `threads`: the setting (None: `default_threads()`, the cores shared with the package's running
    processes). The process is registered, so that processes of the package started after it share
    the cores with it. `OMP_NUM_THREADS` and `MKL_NUM_THREADS` are set for the child processes it
    starts (a library reads them at import).
    """
    count = default_threads(folder=folder) if threads is None else check_count(threads, "threads")
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # set once per process, before any inter-op work; the intra-op threads above matter
        pass
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(count)
    register_process(folder)
    return count
