"""The HTTP service (issues 18, 34): p50/p99 latency and requests/s of `POST /recommend`, batches of 1 and 64,
with the server's micro-batching on and off, and the time to refuse a 10 MB body.

    python benchmarks/bench_serve.py --checkpoint=saved/SASRecGenAIR-....pth
    python benchmarks/bench_serve.py --checkpoint=saved/SASRecGenAIR-....pth --url=http://127.0.0.1:8000
    python benchmarks/bench_serve.py --checkpoint=tests/.../SASRecGenAIR-....pth --requests=50 --clients=2

Without `--url` it starts `python -m recbole_genair.serve` on the checkpoint on a free local port and stops it
at the end; with `--url` it measures a server already started on that checkpoint (its /metadata must name the
same model and catalogue size). Histories are drawn from the catalogue with a fixed seed, up to the model's
`MAX_ITEM_LIST_LENGTH` items each. For each batch size: one client sending `--requests` requests one after
another (latency p50/p99 in ms, requests/s), then `--clients` clients at once (requests/s, p50/p99 under
load), and `Recommender.recommend` in this process on the same batches, with the ratio HTTP p50 / in-process
p50 measured in this run (what HTTP, JSON and validation add). Run by hand; numbers go in the README, never
into tests.
"""
import argparse
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from recbole_genair.recommender import Recommender


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, help="the .pth file served (histories are drawn from its catalogue)")
    parser.add_argument("--data_path", default=None, help="where the dataset's files are, if they moved since training")
    parser.add_argument("--url", default=None, help="a server already started on the checkpoint (default: start one)")
    parser.add_argument("--batch_sizes", default="1,64", help="histories per request (default 1,64)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per batch size and pass (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests before each pass (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the throughput pass (default 4)")
    parser.add_argument("--k", type=int, default=10, help="items per history (default 10)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--micro_batching", default="on,off",
                        help="passes with the server's micro-batching on and off (default on,off; with --url: what "
                             "that server does, reported as given)")
    return parser.parse_args(argv)


def start_server(checkpoint, data_path, micro_batching=True):
    """(process, url) of the command serving `checkpoint` on a free local port, once /health answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "recbole_genair.serve", f"--checkpoint={checkpoint}", "--host=127.0.0.1",
               f"--port={port}", "--log_level=warning"] + ([f"--data_path={data_path}"] if data_path else []) + (
               [] if micro_batching else ["--no_micro_batching"])
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("error: the server did not answer /health within 300 s")


def percentiles(seconds):
    """(p50, p99) in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return statistics.median(ms), p99


def timed_post(client, body):
    start = time.perf_counter()
    answer = client.post("/recommend", json=body)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        raise SystemExit(f"error: /recommend answered {answer.status_code}: {answer.text[:500]}")
    return elapsed


def sequential(url, bodies, warmup):
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in bodies[:warmup]:
            timed_post(client, body)
        start = time.perf_counter()
        latencies = [timed_post(client, body) for body in bodies]
        return latencies, len(bodies) / (time.perf_counter() - start)


def concurrent(url, bodies, clients, warmup):
    """Each client its own connection; requests/s over the whole pass."""
    shares = [bodies[n::clients] for n in range(clients)]

    def run(share):
        with httpx.Client(base_url=url, timeout=120) as client:
            for body in share[:max(1, warmup // clients)]:
                timed_post(client, body)
            barrier.wait()
            return [timed_post(client, body) for body in share]

    barrier = threading.Barrier(clients + 1)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(run, share) for share in shares]
        barrier.wait()
        start = time.perf_counter()
        latencies = [t for future in futures for t in future.result()]
        return latencies, len(latencies) / (time.perf_counter() - start)


def in_process(recommender, bodies, warmup):
    """`Recommender.recommend` on the same bodies, called from a worker thread as FastAPI calls the endpoint: on a
    loaded 2-core machine torch's thread team in the main thread was measured 40x slower than in a worker thread."""
    def run():
        for body in bodies[:warmup]:
            recommender.recommend(body["histories"], k=body["k"])
        latencies = []
        for body in bodies:
            start = time.perf_counter()
            recommender.recommend(body["histories"], k=body["k"])
            latencies.append(time.perf_counter() - start)
        return latencies

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def refused_body(url, megabytes=10):
    """Milliseconds until a body of `megabytes` MB is refused (413), sent whole as one request."""
    body = b'{"histories": [' + b",".join([b'["1"]'] * (megabytes * 1_000_000 // 6)) + b'], "k": 1}'
    with httpx.Client(base_url=url, timeout=120) as client:
        start = time.perf_counter()
        answer = client.post("/recommend", content=body, headers={"content-type": "application/json"})
        elapsed = (time.perf_counter() - start) * 1000
    return answer.status_code, elapsed, len(body)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    recommender = Recommender.load(args.checkpoint, data_path=args.data_path)
    print(f"{recommender!r}; k={args.k}, {args.requests} requests per pass, {args.clients} clients in the throughput pass")
    rows = []
    for mode in args.micro_batching.split(","):
        process, url = ((None, args.url.rstrip("/")) if args.url
                        else start_server(args.checkpoint, args.data_path, mode == "on"))
        try:
            served = httpx.get(f"{url}/metadata").json()
            if (served["model"], served["n_items"]) != (type(recommender.model).__name__, len(recommender.item_ids)):
                raise SystemExit(f"error: {url} serves {served['model']} on {served['n_items']} items, not {recommender!r}")
            rng = random.Random(args.seed)
            ids, longest = list(recommender.item_ids), recommender.max_history
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                bodies = [{"histories": [rng.sample(ids, rng.randint(1, min(longest, len(ids) - args.k)))
                                         for _ in range(batch)], "k": args.k} for _ in range(args.requests)]
                alone, alone_rps = sequential(url, bodies, args.warmup)
                loaded, loaded_rps = concurrent(url, bodies, args.clients, args.warmup)
                local = in_process(recommender, bodies, args.warmup)
                rows.append((mode, batch, *percentiles(alone), alone_rps, *percentiles(loaded), loaded_rps,
                             percentiles(local)[0], percentiles(alone)[0] / percentiles(local)[0]))
            status, refused_ms, size = refused_body(url)
            print(f"micro-batching {mode}: a {size / 1e6:.1f} MB body answered {status} in {refused_ms:.1f} ms")
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    print(f"{'micro-batching':>14} | {'batch':>5} | {'1 client p50 ms':>15} {'p99 ms':>8} {'req/s':>8} | "
          f"{f'{args.clients} clients p50 ms':>16} {'p99 ms':>8} {'req/s':>8} {'histories/s':>11} | "
          f"{'in-process p50 ms':>17} {'HTTP/in-process':>15}")
    for mode, batch, p50, p99, rps, lp50, lp99, lrps, local50, ratio in rows:
        print(f"{mode:>14} | {batch:>5} | {p50:>15.2f} {p99:>8.2f} {rps:>8.1f} | {lp50:>16.2f} {lp99:>8.2f} {lrps:>8.1f} "
              f"{lrps * batch:>11.0f} | {local50:>17.2f} {ratio:>15.2f}")


if __name__ == "__main__":
    main()
