"""The ranking stand-in under the runtime: decoding modes, merged against runtime adapter, nDCG.

Ranks one window per query with llama.cpp (llama-cpp-python) on two slices the adapter never
trained on: all 21 NovelEval queries x 20 passages, and the 10 DL19 dev queries (BM25 top-20).

Part 1, per decoding mode (greedy, constrained, first-token) on one GGUF of the ranking stand-in
(its merged Q8_0 by default): nDCG@10 against the input order, the share of windows answered with
something other than the identity, parse failures, and, between every two modes, mean Kendall tau,
exact match and top-1 agreement.

Part 2, merged against runtime adapter: the same quant of the ranker with the adapter merged at
conversion (``dear-local build smollm2-135m-ranker``) against the bare stand-in's quant of the same
type plus the adapter converted to GGUF (``dear-local convert-lora``) and applied at load time.

    python bench/bench_ranker.py --threads 2
    python bench/bench_ranker.py --merged M.gguf --base B.gguf --adapter A.gguf --json out.json

Only ratios and agreements from one run compare; name the CPU next to every figure (printed first).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

MODES = ("greedy", "constrained", "first-token")
RANKER = "smollm2-135m-ranker"


def windows(name: str):
    """``(qid, query, passages, docids)`` per query and the slice's qrels, for ``noveleval`` or ``dl19-dev``."""
    from dear_local_convert.standins.eval_ranker import eval_slice

    sl = eval_slice(name)
    return [(q.qid, q.text, list(q.passages), list(q.docids)) for q in sl.queries], sl.qrels


def rank_all(reranker, queries) -> tuple[dict, float, int]:
    """Per qid the ranking (input positions, best first); seconds per window; unparsed windows."""
    orders, seconds, unparsed = {}, [], 0
    for qid, text, passages, _ in queries:
        t = time.perf_counter()
        resp = reranker.rerank(text, passages)
        seconds.append(time.perf_counter() - t)
        orders[qid] = [r.index for r in resp.results]
        unparsed += sum(w.status != "ok" for w in resp.windows)
    return orders, statistics.mean(seconds), unparsed


def agreement(a: dict, b: dict) -> dict:
    from dear_local_convert.agreement.metrics import exact_match, kendall_tau, top1_agreement

    qids = sorted(a)
    return {
        "tau": statistics.mean(kendall_tau(a[q], b[q]) for q in qids),
        "exact": sum(exact_match(a[q], b[q]) for q in qids) / len(qids),
        "top1": sum(top1_agreement(a[q], b[q]) for q in qids) / len(qids),
    }


def quality(orders: dict, queries, qrels) -> dict:
    from dear_local_convert.agreement.metrics import ndcg

    docids = {qid: d for qid, _, _, d in queries}
    run = {qid: [docids[qid][i] for i in order] for qid, order in orders.items()}
    initial = {qid: d for qid, d in docids.items()}
    n = len(orders)
    return {
        "ndcg@10": ndcg(run, qrels, (10,)).mean["ndcg@10"],
        "input_ndcg@10": ndcg(initial, qrels, (10,)).mean["ndcg@10"],
        "non_identity": sum(o != list(range(len(o))) for o in orders.values()) / n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merged", default=f"{RANKER}:Q8_0", help="the ranker with the adapter merged (GGUF or NAME:QUANT)")
    ap.add_argument("--base", default=None, help="the bare stand-in's GGUF of the same type, for part 2")
    ap.add_argument("--adapter", default=None, help="the ranking adapter as a GGUF LoRA (dear-local convert-lora), for part 2")
    ap.add_argument("--slice", action="append", choices=("noveleval", "dl19-dev"), help="default: both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()

    from dear_local import Reranker
    from dear_local.backends.loader import llama_system_info
    from dear_local.env_report import cpu_model

    print(f"CPU: {cpu_model()}\nllama.cpp: {llama_system_info().strip()}\nmodel: {a.merged}")
    out: dict = {"cpu": cpu_model(), "model": a.merged, "slices": {}}
    for name in a.slice or ["noveleval", "dl19-dev"]:
        queries, qrels = windows(name)
        res: dict = {"modes": {}, "pairs": {}}
        orders = {}
        for mode in MODES:
            r = Reranker(a.merged, decoding=mode, n_threads=a.threads)
            orders[mode], secs, unparsed = rank_all(r, queries)
            r.close()
            res["modes"][mode] = {**quality(orders[mode], queries, qrels), "s_per_window": secs, "unparsed": unparsed}
        for m1, m2 in itertools.combinations(MODES, 2):
            res["pairs"][f"{m1} / {m2}"] = agreement(orders[m1], orders[m2])
        print(f"\n{name}: {len(queries)} windows of {len(queries[0][2])} passages; "
              f"input order nDCG@10 {res['modes']['constrained']['input_ndcg@10']:.3f}")
        print("| mode | nDCG@10 | non-identity | unparsed | s/window |\n|---|---|---|---|---|")
        for mode, m in res["modes"].items():
            print(f"| {mode} | {m['ndcg@10']:.3f} | {m['non_identity']:.0%} | {m['unparsed']} | {m['s_per_window']:.2f} |")
        print("| modes | mean Kendall τ | exact | top-1 |\n|---|---|---|---|")
        for pair, g in res["pairs"].items():
            print(f"| {pair} | {g['tau']:.3f} | {g['exact']:.0%} | {g['top1']:.0%} |")
        if a.base and a.adapter:
            r = Reranker(a.base, lora=a.adapter, n_threads=a.threads)
            runtime, secs, unparsed = rank_all(r, queries)
            r.close()
            g = agreement(orders["constrained"], runtime)
            res["runtime_adapter"] = {**quality(runtime, queries, qrels), **g, "s_per_window": secs, "unparsed": unparsed}
            print("| constrained | nDCG@10 | τ vs merged | exact | top-1 |\n|---|---|---|---|---|")
            print(f"| merged | {res['modes']['constrained']['ndcg@10']:.3f} | 1.000 | 100% | 100% |")
            print(f"| base + runtime adapter | {res['runtime_adapter']['ndcg@10']:.3f} | {g['tau']:.3f} "
                  f"| {g['exact']:.0%} | {g['top1']:.0%} |")
        out["slices"][name] = res
        sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
