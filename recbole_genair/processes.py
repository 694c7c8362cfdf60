"""Run one function in several fresh processes at once and report which ones failed."""
import multiprocessing


def run_in_processes(target, jobs, names):
    """`target(*job)` for each job, each in a fresh (spawned) interpreter, all at once; the failed ones' descriptions.

    Spawned, not forked: a forked child would inherit the parent's OpenMP pool and torch state. On an
    interruption every process still running is stopped.
    """
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=job, name=name) for job, name in zip(jobs, names)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    return [f"{p.name}: exit code {p.exitcode}" for p in processes if p.exitcode != 0]
