"""Prompt-evaluation speed of llama.cpp on this CPU, per GGUF and llama.cpp option.

On the `card` template the stand-in writes (almost) nothing, so a rerank costs
one prompt evaluation: this is the figure behind bench_decoding's (e)/(b).
Each GGUF is loaded once per setting (CPU buffer mode, flash attention,
``n_ubatch``), evaluates
the same NovelEval prompt from an empty KV cache ``--repeat`` times, and the
fastest run counts. Settings run one after another, in one process, so compare
only rows of the same run.

    python bench/bench_prompt.py <a.gguf> <b.gguf> --threads 2 --flash-attn 0 1 --ubatch 512
    python bench/bench_prompt.py <a.gguf> --flash-attn 1 --kv f16 q8_0 --ubatch 256 512 1024
    python bench/bench_prompt.py <a.gguf> --cpu-buffers extra plain --rounds 3

With several ``--cpu-buffers`` modes, ``--rounds`` alternates them (extra, plain,
extra, plain, ...) so that machine drift hits both, and the best of all rounds counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prompt_ids_for(path: Path, template: str, query: str, passages: list[str]) -> list[int]:
    from dear_local.backends.llama import LlamaCppBackend
    from dear_local.contract import Profile
    from dear_local.engine import prompt_ids

    backend = LlamaCppBackend(path, vocab_only=True, n_ctx=512)
    return prompt_ids(backend, Profile(template=template), query, passages)


# KV-cache element types (ggml's enum ggml_type); a quantized V cache needs flash attention
KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


def tokens_per_second(
    path: Path, ids: list[int], threads: int, flash_attn: bool, ubatch: int, repeat: int, cpu_buffers: str = "auto",
    kv: str = "f16",
) -> float:
    import llama_cpp

    from dear_local.backends.loader import open_llama

    llm, _ = open_llama(
        path, cpu_buffers=cpu_buffers, n_ctx=len(ids) + 64, n_threads=threads, n_threads_batch=threads,
        n_batch=max(ubatch, 512), n_ubatch=ubatch, flash_attn=flash_attn, logits_all=False, verbose=False,
        type_k=KV_TYPES[kv], type_v=KV_TYPES[kv],
    )
    best = float("inf")
    for _ in range(repeat):
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        t = time.perf_counter()
        llm.eval(ids)
        best = min(best, time.perf_counter() - t)
    llm.close()
    return len(ids) / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="GGUF files")
    ap.add_argument("--template", default="card", choices=["card", "rankgpt-chat"])
    ap.add_argument("--passages", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="evaluations per setting; the fastest counts")
    ap.add_argument("--flash-attn", type=int, nargs="+", default=[0], choices=[0, 1])
    ap.add_argument("--ubatch", type=int, nargs="+", default=[512])
    ap.add_argument("--kv", nargs="+", default=["f16"], choices=sorted(KV_TYPES),
                    help="KV-cache types (K and V alike); quantized ones run only with --flash-attn 1")
    ap.add_argument("--cpu-buffers", nargs="+", default=["auto"], choices=["auto", "extra", "plain"],
                    help="llama.cpp weight buffer modes to compare (see dear_local/backends/loader.py)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the --cpu-buffers modes this many times")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", action="store_true", help="also print every row as one JSON line at the end")
    args = ap.parse_args(argv)

    import llama_cpp
    from bench_decoding import noveleval

    from dear_local.backends.loader import choose_cpu_buffers, llama_system_info
    from dear_local.env_report import cpu_model

    query, passages = noveleval(args.data, 1, args.passages)[0]
    print(f"llama-cpp-python {llama_cpp.__version__}; {args.threads} threads; template {args.template}; "
          f"NovelEval query 0 x {args.passages} passages; best of {args.repeat} x {args.rounds} round(s)")
    from dear_local.backends.cpu_variant import ensure_cpu_backend

    variant = ensure_cpu_backend().label
    print(f"CPU: {cpu_model()}\nllama.cpp: {llama_system_info().strip()} (CPU variant: {variant})")
    rows = []
    print(f"{'model':42} {'tokens':>6} {'buffers':>13} {'flash':>5} {'ubatch':>6} {'kv':>5} {'tokens/s':>9}")
    for path in args.models:
        if not path.is_file():
            sys.exit(f"{path}: no such file")
        ids = prompt_ids_for(path, args.template, query, passages)
        for fa in args.flash_attn:
            for ub, kv in [(ub, kv) for ub in args.ubatch for kv in args.kv if fa or kv == "f16"]:
                best: dict[str, float] = {}
                for _ in range(args.rounds):
                    for mode in args.cpu_buffers:
                        tps = tokens_per_second(path, ids, args.threads, bool(fa), ub, args.repeat, mode, kv)
                        best[mode] = max(best.get(mode, 0.0), tps)
                for mode, tps in best.items():
                    shown = f"{mode}->{choose_cpu_buffers(mode).mode}" if mode == "auto" else mode
                    print(f"{path.name:42} {len(ids):6d} {shown:>13} {fa:5d} {ub:6d} {kv:>5} {tps:9.1f}", flush=True)
                    rows.append({"model": path.name, "tokens": len(ids), "buffers": mode, "flash_attn": fa,
                                 "ubatch": ub, "kv": kv, "tokens_per_s": round(tps, 2), "variant": variant})
                if len(best) > 1 and {"extra", "plain"} <= best.keys():
                    print(f"{'':42} plain / extra = {best['plain'] / best['extra']:.2f}", flush=True)
    if args.json:
        import json

        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
