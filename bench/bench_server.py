"""Benchmark `dear-local serve` under concurrent clients.

Starts the real server (`python -m dear_local serve`) as a subprocess, then:

1. warms it up (the first rerank in a process is slow);
2. load: ``--clients`` clients each send ``--requests`` requests at the same time,
   split into ``--rounds`` rounds;
3. baseline: before each round and once at the end, one client sends
   requests/rounds requests one after another. Alternating the two spreads a
   change in machine load (these VMs drift by 30% over minutes) over both; the
   default, one request per client and round, alternates every ~25 s.

It reports the load's throughput relative to the sequential client's (goal
>= 0.95: queueing and HTTP cost next to nothing), p50/p99 latency under load,
errors (goal 0) and the server's RSS growth from after warm-up to the end
(goal <= 5%).

Every request is distinct (its own NovelEval query and passages, cut to
``--words`` words), so no request rides on the previous one's cached prompt;
``--same-prompt`` sends one request over and over instead.

    python bench/bench_server.py --model smollm2-135m-instruct:Q4_1 --template rankgpt-chat
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


def noveleval(data_dir: Path) -> list[tuple[str, list[str]]]:
    """The 21 NovelEval queries with their 20 passages, read from ``data_dir`` (checked)."""
    import os

    from dear_local_convert.slices import load_slice

    os.environ["DEAR_LOCAL_DATA"] = str(data_dir)
    return [(q.text, list(q.passages)) for q in load_slice("noveleval").queries]


def make_requests(data, count: int, docs: int, words: int, same: bool) -> list[dict]:
    """``count`` distinct rerank bodies: query i with a rotating slice of its passages."""
    out = []
    for i in range(count):
        k = 0 if same else i
        query, passages = data[k % len(data)]
        start = (k // len(data) * docs) % (len(passages) - docs + 1)
        chosen = [" ".join(p.split()[:words]) for p in passages[start:start + docs]]
        out.append({"model": "bench", "query": query, "documents": chosen, "top_n": docs})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dear_local", "serve", "--model", args.model, "--port", str(port),
           "--max-queue", str(args.clients * 2), "--timeout", "600", "--log-level", "warning"]
    if args.template:
        cmd += ["--template", args.template]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            sys.exit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("the server did not start within 300 s")
        time.sleep(0.2)


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def merge(self, other: Recorder) -> None:
        self.latencies += other.latencies
        self.errors += other.errors

    def send(self, client: httpx.Client, body: dict) -> None:
        t = time.perf_counter()
        try:
            resp = client.post("/v1/rerank", json=body)
            ok = resp.status_code == 200 and len(resp.json()["results"]) == len(body["documents"])
            problem = None if ok else f"{resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        took = time.perf_counter() - t
        with self.lock:
            if problem:
                self.errors.append(problem)
            else:
                self.latencies.append(took)


def sequential(url: str, bodies: list[dict]) -> tuple[float, Recorder]:
    rec = Recorder()
    with httpx.Client(base_url=url, timeout=600) as c:
        t = time.perf_counter()
        for body in bodies:
            rec.send(c, body)
        return time.perf_counter() - t, rec


def concurrent(url: str, per_client: list[list[dict]]) -> tuple[float, Recorder]:
    rec = Recorder()

    def run(bodies: list[dict]) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            for body in bodies:
                rec.send(c, body)

    t = time.perf_counter()
    with ThreadPoolExecutor(len(per_client)) as pool:
        list(pool.map(run, per_client))
    return time.perf_counter() - t, rec


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, self.rss())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="A .gguf path or NAME[:QUANT].")
    ap.add_argument("--template", default="rankgpt-chat")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="Requests per client.")
    ap.add_argument("--rounds", type=int, default=25,
                    help="Split the load into this many rounds, each after a sequential block of "
                         "requests/rounds requests (one more block closes the run).")
    ap.add_argument("--docs", type=int, default=5, help="Documents per request.")
    ap.add_argument("--words", type=int, default=20, help="Words kept of each passage.")
    ap.add_argument("--threads", type=int, default=None, help="The server's --threads.")
    ap.add_argument("--same-prompt", action="store_true", help="Send one request over and over.")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("DEAR_LOCAL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=None, help="Also write the figures to this JSON file.")
    return ap.parse_args()


def main() -> None:
    args = parse_args()

    if args.rounds < 1 or args.requests % args.rounds:
        sys.exit(f"--requests ({args.requests}) must be a multiple of --rounds ({args.rounds})")
    data = noveleval(args.data)
    k = args.requests // args.rounds  # per client and round, and in each sequential block
    n_seq = k * (args.rounds + 1)
    n_load = args.clients * args.requests
    bodies = make_requests(data, 2 + n_seq + n_load, args.docs, args.words, args.same_prompt)
    warm, seq_bodies, load = bodies[:2], bodies[2:2 + n_seq], bodies[2 + n_seq:]
    seq_blocks = [seq_bodies[i * k:(i + 1) * k] for i in range(args.rounds + 1)]
    per_client = [load[c::args.clients] for c in range(args.clients)]
    load_blocks = [[bs[r * k:(r + 1) * k] for bs in per_client] for r in range(args.rounds)]

    port = free_port()
    server = start_server(args, port)
    url = f"http://127.0.0.1:{port}"
    t_seq = t_load = 0.0
    r_seq, r_load = Recorder(), Recorder()
    rounds = []
    try:
        sequential(url, warm)
        sampler = RssSampler(server.pid)
        rss_start = sampler.rss()
        sampler.start()
        # Sequential and loaded blocks alternate (and a sequential block closes the
        # run), so a change in machine load during the run hits both alike.
        for block in range(args.rounds + 1):
            took, rec = sequential(url, seq_blocks[block])
            t_seq += took
            r_seq.merge(rec)
            if block == args.rounds:
                break
            took_load, rec = concurrent(url, load_blocks[block])
            t_load += took_load
            r_load.merge(rec)
            ratio = (args.clients * k / took_load) / (k / took)
            rounds.append(round(ratio, 3))
            print(f"round {block + 1}/{args.rounds}: sequential {k / took:.3f} req/s, "
                  f"{args.clients} clients {args.clients * k / took_load:.3f} req/s, ratio {ratio:.3f}", flush=True)
        rss_end = sampler.rss()
        sampler.stop.set()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(120)

    base_rps = n_seq / t_seq
    load_rps = n_load / t_load
    errors = r_seq.errors + r_load.errors
    figures = {
        "model": args.model, "template": args.template, "clients": args.clients,
        "requests_per_client": args.requests, "rounds": args.rounds, "docs_per_request": args.docs,
        "words_per_doc": args.words, "same_prompt": args.same_prompt,
        "baseline_requests": n_seq, "baseline_rps": round(base_rps, 4),
        "load_rps": round(load_rps, 4),
        "throughput_ratio": round(load_rps / base_rps, 4),
        "round_ratios": rounds,
        "baseline_p50_s": round(percentile(r_seq.latencies, 50), 3),
        "load_p50_s": round(percentile(r_load.latencies, 50), 3),
        "load_p99_s": round(percentile(r_load.latencies, 99), 3),
        "errors": len(errors),
        "rss_start_mib": round(rss_start / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_peak_mib": round(max(sampler.peak, rss_end) / 2**20, 1),
        "rss_growth": round((rss_end - rss_start) / rss_start, 4),
        "wall_s": round(t_seq + t_load, 1),
    }
    for line in errors[:5]:
        print("error:", line, file=sys.stderr)
    print(json.dumps(figures, indent=2))
    goals = {
        "throughput_ratio >= 0.95": figures["throughput_ratio"] >= 0.95,
        "errors == 0": figures["errors"] == 0,
        "rss_growth <= 5%": figures["rss_growth"] <= 0.05,
    }
    for goal, met in goals.items():
        print(f"{'met ' if met else 'MISSED'}  {goal}")
    if args.out:
        args.out.write_text(json.dumps({**figures, "goals": goals}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
