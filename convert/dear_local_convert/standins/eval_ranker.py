"""Measure the ranking stand-in: nDCG@10 and identity share of its reference rankings.

Runs the transformers reference backend (fp32 by default, CPU) under the stand-in's profile
(``rankgpt-chat``, window 20, its decoding unless ``--decoding`` names another), with or without the LoRA adapter (applied
through PEFT, unmerged, as ``dear-local reference --lora`` does), on one window per query:

- ``dl19-dev``: the DL19 dev queries of :data:`~dear_local_convert.standins.ranker_split.DEV_QIDS`,
  BM25 top-20;
- ``dl19-holdout``: the further held-out queries (:data:`~dear_local_convert.standins.ranker_split.HOLDOUT_QIDS`);
- ``noveleval``: all 21 NovelEval queries x 20 passages, never trained on.

Command::

    PYTHONPATH=.:convert DEAR_LOCAL_DATA=../shared/data \\
        python -m dear_local_convert.standins.eval_ranker --adapter ADAPTER_DIR \\
        --slice dl19-dev --slice noveleval [--decoding first-token] [--out results.json]

For each slice it prints nDCG@10 of the model's order and of the input order (BM25's for DL19,
the search engine's for NovelEval) and the share of windows whose answer is not the identity.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from dear_local.errors import UserInputError

from dear_local_convert.standins.ranker_split import SLICES, STANDIN_MODEL, eval_slice, script_exit  # noqa: F401 - eval_slice is this module's too


def evaluate(backend, profile, sl, *, log=print) -> dict:
    """Rank each query's candidates in one window; returns nDCG@10 (model and input order), identity share and per-query orders.

    ``backend`` is any ``Backend``; ``profile`` the profile to rank under; ``sl`` a loaded slice.
    """
    from dear_local.engine import rank_window
    from dear_local_convert.agreement.metrics import ndcg

    run, orders, identity, statuses = {}, {}, 0, {}
    t0 = time.time()
    for q in sl.queries:
        res = rank_window(backend, profile, q.text, list(q.passages))
        run[q.qid] = [q.docids[i] for i in res.order]
        orders[q.qid] = res.order
        statuses[q.qid] = res.status
        identity += res.order == list(range(len(q.passages)))
        log(f"  {sl.name} {q.qid}: {res.raw_text[:80]}")
    model = ndcg(run, sl.qrels, (10,))
    base = ndcg(sl.initial_run(), sl.qrels, (10,))
    n = len(sl.queries)
    return {
        "slice": sl.name,
        "queries": n,
        "ndcg@10": model.mean["ndcg@10"],
        "input_ndcg@10": base.mean["ndcg@10"],
        "non_identity_share": (n - identity) / n,
        "per_query_ndcg@10": {q: v["ndcg@10"] for q, v in model.per_query.items()},
        "orders": orders,
        "statuses": statuses,
        "seconds": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dear_local_convert.standins.eval_ranker", description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", default=None, help="PEFT LoRA adapter directory (omit for the base model)")
    ap.add_argument("--base", default=None, help="SmolLM2 bf16 checkpoint dir (default: the stand-in's)")
    ap.add_argument("--slice", action="append", choices=SLICES, help="repeatable; default: dl19-dev and noveleval")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--decoding", action="append", choices=("greedy", "constrained", "first-token"),
                    help="repeatable; default: the stand-in profile's")
    ap.add_argument("--model", default=None, help="the manifest whose profile ranks (default: the stand-in's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    return script_exit(lambda: _measure(a))


def _measure(a: argparse.Namespace) -> None:
    import torch

    from dear_local.fileio import write_text_atomic
    from dear_local.store import get_manifest
    from dear_local_convert.standins.smollm2 import standin_checkpoint
    from dear_local_convert.transformers_backend.backend import TransformersBackend

    torch.set_num_threads(a.threads)
    if a.adapter is not None and not (Path(a.adapter) / "adapter_config.json").is_file():
        raise UserInputError(f"{a.adapter} holds no adapter_config.json; pass a PEFT adapter directory")
    base = Path(a.base) if a.base else standin_checkpoint()
    base_profile = get_manifest(a.model or STANDIN_MODEL).profile
    backend = TransformersBackend(base, device="cpu", dtype=a.dtype, lora=a.adapter)
    results = {"model": backend.model_label, "dtype": a.dtype, "profile": base_profile.to_dict(), "slices": []}
    for decoding in a.decoding or [base_profile.decoding]:
        profile = replace(base_profile, decoding=decoding)
        for name in a.slice or ["dl19-dev", "noveleval"]:
            r = {**evaluate(backend, profile, eval_slice(name)), "decoding": decoding}
            results["slices"].append(r)
            print(
                f"{name} ({decoding}): nDCG@10 {r['ndcg@10']:.4f} (input order {r['input_ndcg@10']:.4f}), "
                f"non-identity {r['non_identity_share']:.0%} of {r['queries']} windows, {r['seconds']:.0f}s"
            )
            sys.stdout.flush()
    if a.out:
        write_text_atomic(a.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
