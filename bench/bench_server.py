"""Benchmark `dear-local serve` under concurrent clients.

Starts the real server (`python -m dear_local serve`) as a subprocess, then:

1. warms it up (the first rerank in a process is slow);
2. baseline: one client sends ``--requests`` requests one after another;
3. load: ``--clients`` clients each send ``--requests`` requests at the same time;
4. baseline again, so a change in machine load during the run cancels out.

It reports the load phase's throughput relative to the mean baseline (goal
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
import statistics
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

    from convert.slices import load_slice

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="A .gguf path or NAME[:QUANT].")
    ap.add_argument("--template", default="rankgpt-chat")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="Requests per client (and in each baseline).")
    ap.add_argument("--docs", type=int, default=5, help="Documents per request.")
    ap.add_argument("--words", type=int, default=20, help="Words kept of each passage.")
    ap.add_argument("--threads", type=int, default=None, help="The server's --threads.")
    ap.add_argument("--same-prompt", action="store_true", help="Send one request over and over.")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("DEAR_LOCAL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = ap.parse_args()

    data = noveleval(args.data)
    n_load = args.clients * args.requests
    bodies = make_requests(data, 2 + 2 * args.requests + n_load, args.docs, args.words, args.same_prompt)
    warm, bodies = bodies[:2], bodies[2:]
    before, bodies = bodies[:args.requests], bodies[args.requests:]
    after, load = bodies[:args.requests], bodies[args.requests:]
    per_client = [load[c::args.clients] for c in range(args.clients)]

    port = free_port()
    server = start_server(args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        sequential(url, warm)
        sampler = RssSampler(server.pid)
        rss_start = sampler.rss()
        sampler.start()
        t_before, r_before = sequential(url, before)
        t_load, r_load = concurrent(url, per_client)
        t_after, r_after = sequential(url, after)
        rss_end = sampler.rss()
        sampler.stop.set()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(120)

    base_rps = [args.requests / t_before, args.requests / t_after]
    load_rps = n_load / t_load
    errors = r_before.errors + r_load.errors + r_after.errors
    figures = {
        "model": args.model, "template": args.template, "clients": args.clients,
        "requests_per_client": args.requests, "docs_per_request": args.docs, "words_per_doc": args.words,
        "same_prompt": args.same_prompt,
        "baseline_rps_before": round(base_rps[0], 4), "baseline_rps_after": round(base_rps[1], 4),
        "load_rps": round(load_rps, 4),
        "throughput_ratio": round(load_rps / statistics.mean(base_rps), 4),
        "baseline_p50_s": round(percentile(r_before.latencies + r_after.latencies, 50), 3),
        "load_p50_s": round(percentile(r_load.latencies, 50), 3),
        "load_p99_s": round(percentile(r_load.latencies, 99), 3),
        "errors": len(errors),
        "rss_start_mib": round(rss_start / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_peak_mib": round(max(sampler.peak, rss_end) / 2**20, 1),
        "rss_growth": round((rss_end - rss_start) / rss_start, 4),
        "wall_s": round(t_before + t_load + t_after, 1),
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
