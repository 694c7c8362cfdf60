"""Threads of concurrent processes (issue 31): what PyTorch's default threads cost when processes share the cores.

    python benchmarks/bench_threads.py --dataset=ml-100k --model=SASRec --epochs=4 --seeds=3 \
        --output=results/threads/ml-100k.json
    python benchmarks/bench_threads.py --report_only=results/threads/ml-100k.json

1. Two trainings at once, each in its own process: with PyTorch's default threads (one per core, as the
   package ran before `threads`) against one thread each (`threads: ~` with two processes), and one training
   alone with every core and with one thread, for scale. Per run: median seconds per training epoch and wall seconds of the process.
2. A comparison of `--seeds` seeds: `--compare --workers=1` against `--workers=2` (wall seconds of the command).

Every run trains `--epochs` epochs with early stopping out of reach (`stopping_step` above it), so the runs
compared do the same work; the numbers are speed, not quality. Any other `--key=value` is a RecBole setting for
every run. Run by hand on a quiet machine; numbers go in the README, never into tests.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(model, dataset, threads, settings):
    """Runs inside a child process: one training; prints its per-epoch seconds and threads as JSON."""
    from recbole_genair.quick_start import run_recbole_genair

    cmd_args = settings.pop("_cmd_args")
    result = run_recbole_genair(model, dataset, config_dict={**settings, "threads": threads}, cmd_args=cmd_args,
                                saved=False, verbose=False)
    training = result["training"]
    print(json.dumps({"epoch_s": training["seconds_per_epoch"], "epochs": training["epochs"],
                      "threads": result["threads"]}))


def start(model, dataset, threads, settings):
    cmd = [sys.executable, __file__, "--child", model, dataset, str(threads), json.dumps(settings)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=settings["_cwd"])


def finish(process, started):
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a benchmark run failed:\n{err[-3000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}


def concurrent(model, dataset, threads, count, settings):
    """`count` trainings started together with `threads` threads each; their results."""
    started = time.perf_counter()
    processes = [start(model, dataset, threads, settings) for _ in range(count)]
    return [finish(p, started) for p in processes]


def comparison(model, dataset, seeds, workers, epochs, output, rest):
    cmd = [sys.executable, str(ROOT / "run_recbole_genair.py"), "--compare", f"--models={model}", f"--dataset={dataset}",
           f"--seeds={seeds}", f"--workers={workers}", f"--output={output}", f"--epochs={epochs}",
           f"--stopping_step={epochs + 1}", "--show_progress=False", "--state=WARNING", *rest]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=output.parent)
    if done.returncode != 0:
        raise SystemExit(f"the comparison with --workers={workers} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the comparison (part 2); 0 skips it")
    parser.add_argument("--output", default=None, help="JSON file of the measurements")
    parser.add_argument("--report_only", default=None, help="a JSON file written by --output: print its tables")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.report_only:
        rows = json.loads(Path(args.report_only).read_text())
        report(rows, sum(1 for k in rows if k.startswith("compare_workers")) and args.seeds)
        return
    if args.child:
        model, dataset, threads, settings = args.child
        settings = json.loads(settings)
        settings.pop("_cwd")
        child(model, dataset, int(threads), settings)
        return

    import torch

    from recbole_genair.threads import available_cores

    cores = available_cores()
    pytorch_default = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="bench_threads-"))
    settings = {"epochs": args.epochs, "stopping_step": args.epochs + 1, "show_progress": False, "state": "WARNING",
                "_cwd": str(work)}
    settings["_cmd_args"] = rest
    rows = {"cores": cores, "pytorch_default_threads": pytorch_default, "model": args.model, "dataset": args.dataset,
            "epochs": args.epochs}
    rows["alone"] = concurrent(args.model, args.dataset, pytorch_default, 1, settings)
    rows["alone_one_thread"] = concurrent(args.model, args.dataset, 1, 1, settings)
    rows["two_default_threads"] = concurrent(args.model, args.dataset, pytorch_default, 2, settings)
    rows["two_one_thread_each"] = concurrent(args.model, args.dataset, max(1, cores // 2), 2, settings)
    if args.seeds:
        for workers in (1, 2):
            folder = work / f"compare-workers{workers}"
            rows[f"compare_workers{workers}_s"] = comparison(args.model, args.dataset, args.seeds, workers, args.epochs,
                                                             folder, rest)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=1))
    report(rows, args.seeds)


def report(rows, seeds):
    print(f"\n{rows['model']} on {rows['dataset']}, {rows['epochs']} epochs per run, {rows['cores']} cores "
          f"(PyTorch's default: {rows['pytorch_default_threads']} threads per process)\n")
    print("| runs at once | threads each | s/epoch (median per run) | wall s (per run) |")
    print("|---|---|---|---|")
    for key, label in (("alone", "1"), ("alone_one_thread", "1"), ("two_default_threads", "2"),
                       ("two_one_thread_each", "2")):
        runs = rows[key]
        print(f"| {label} | {runs[0]['threads']} | " + ", ".join(f"{r['epoch_s']:.2f}" for r in runs) + " | "
              + ", ".join(f"{r['wall_s']:.0f}" for r in runs) + " |")
    default = statistics.mean(r["epoch_s"] for r in rows["two_default_threads"])
    shared = statistics.mean(r["epoch_s"] for r in rows["two_one_thread_each"])
    print(f"\ntwo at once: default threads / shared threads = {default / shared:.2f}x the time per epoch, "
          f"{max(r['wall_s'] for r in rows['two_default_threads']) / max(r['wall_s'] for r in rows['two_one_thread_each']):.2f}x the wall time")
    if seeds:
        one, two = rows["compare_workers1_s"], rows["compare_workers2_s"]
        print(f"--compare, {seeds} seeds: --workers=1 {one:.0f} s, --workers=2 {two:.0f} s ({one / two:.2f}x)")


if __name__ == "__main__":
    main()
