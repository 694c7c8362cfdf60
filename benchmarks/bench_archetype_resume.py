"""The archetype step on a Beauty-sized catalogue, killed and resumed: what a kill costs and what it keeps.

    python benchmarks/bench_catalogue.py --folder=/tmp/catalogue --stages=load        # generates the catalogue
    python benchmarks/bench_archetype_resume.py --catalogue=/tmp/catalogue/catalogue --folder=/tmp/resume

Runs `python -m recbole_genair.archetype` over every item of the generated catalogue (57,289 items, template
titles) with a tiny random-weight Llama built from a `transformers` config (the real generation and pooling
code; `--llm_model` takes another), SIGKILLs it once `--kill_at` of the items have vectors, and runs the same
command again. Reports items/s before and after the kill, the resumed run's start-up time (until its first new
vector), peak RSS of both runs and the RSS as the first run went on (flat in the number of items done), and
checks that no finished item was generated again: every item has one text record and one vector, and the
records written before the kill are unchanged. Run by hand; the numbers go in the README and the closing note.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "catalogue"


def rss_mb(pid):
    """(current, peak) resident memory of a running process in MB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def count_ids(path):
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def text_records(path):
    """{id: the record's line} of the text log; a line torn by the kill is skipped, as the pipeline skips it."""
    records, lines = {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            lines += 1
            records[record["id"]] = line
    return records, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogue", required=True, help="folder with catalogue.inter and catalogue.item")
    parser.add_argument("--folder", required=True, help="where the copy, the tiny model and the work files go")
    parser.add_argument("--llm_model", default=None, help="an LLM folder; default: a tiny random Llama")
    parser.add_argument("--kill_at", type=float, default=0.4, help="share of the items with vectors at the kill")
    parser.add_argument("--max_new_tokens", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    folder = Path(args.folder)
    data = folder / NAME
    data.mkdir(parents=True, exist_ok=True)
    for ext in ("inter", "item"):
        target = data / f"{NAME}.{ext}"
        if not target.exists():
            target.symlink_to(Path(args.catalogue).resolve() / f"{NAME}.{ext}")
    llm = args.llm_model
    if llm is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_llm import build_tiny_llm

        llm = str(folder / "tiny-llm")
        if not Path(llm, "config.json").exists():
            build_tiny_llm(llm)
    with open(data / f"{NAME}.inter", encoding="utf-8") as f:
        next(f)
        n_items = len({line.split("\t")[1] for line in f})  # the items the preprocessor embeds: those interacted with
    work = data / f"{NAME}.archetype-work"
    if work.exists() or (data / f"{NAME}.itememb").exists():
        raise SystemExit(f"{work} or the .itememb exists: give an empty --folder")
    command = [sys.executable, "-m", "recbole_genair.archetype", f"--dataset={NAME}", f"--data_path={data}",
               f"--llm_model={llm}", f"--max_new_tokens={args.max_new_tokens}", f"--batch_size={args.batch_size}",
               f"--embed_batch_size={args.batch_size}", "--pca_components=16", "--repetition_penalty=1.0"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ids_path = work / "vectors.ids"

    # first run, killed
    log = open(folder / "run1.log", "w")
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    samples, first_vector, next_mark = [], None, 0.1
    while True:
        done = count_ids(ids_path)
        if done and first_vector is None:
            first_vector = time.perf_counter() - start
        if done >= next_mark * n_items:
            samples.append((done, *rss_mb(proc.pid)))
            next_mark += 0.1
        if done >= args.kill_at * n_items or proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"the first run ended before the kill: {(folder / 'run1.log').read_text()[-2000:]}")
    peak1 = rss_mb(proc.pid)[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_seconds = time.perf_counter() - start
    finished = count_ids(ids_path)
    before, _ = text_records(work / "texts.jsonl")

    # second run, the same command
    log = open(folder / "run2.log", "w")
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    resumed_first = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # the child's own peak RSS comes with it
        if pid:
            break
        if resumed_first is None and count_ids(ids_path) > finished:
            resumed_first = time.perf_counter() - start
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    second_seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"the resumed run failed: {(folder / 'run2.log').read_text()[-2000:]}")
    peak2 = usage.ru_maxrss / 1024

    after, lines = text_records(work / "texts.jsonl")
    ids = ids_path.read_text().split()
    itememb_rows = count_ids(data / f"{NAME}.itememb") - 1
    kept = sum(after.get(item) == line for item, line in before.items())
    print(f"catalogue: {n_items} items; tiny LLM: {llm}; max_new_tokens {args.max_new_tokens}, batch {args.batch_size}")
    print(f"first run: {finished} items with vectors ({finished / n_items:.0%}) in {first_seconds:.0f} s "
          f"(first vector after {first_vector:.1f} s of start-up, then {finished / (first_seconds - first_vector):.1f} items/s), peak RSS {peak1:.0f} MB, "
          f"then SIGKILL")
    print("  RSS as it went on: " + ", ".join(f"{d} items {r:.0f} MB" for d, r, _ in samples))
    print(f"resumed run: {n_items - finished} items in {second_seconds:.0f} s "
          f"(first new vector after {resumed_first:.1f} s of start-up, then "
          f"{(n_items - finished) / (second_seconds - resumed_first):.1f} items/s), "
          f"peak RSS {peak2:.0f} MB")
    print(f"text records: {lines} lines for {len(after)} items (a regenerated item would add a line); "
          f"{kept} of the {len(before)} records written before the kill unchanged")
    print(f"vectors: {len(ids)} ids, {len(set(ids))} distinct; .itememb rows: {itememb_rows}")
    ok = lines == len(after) == n_items and kept == len(before) and len(ids) == len(set(ids)) == n_items \
        and itememb_rows == n_items
    print("resume kept every finished item and did each other item once" if ok else "CHECK FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
