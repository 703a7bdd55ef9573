"""Time the same NovelEval windows under five decoding paths and print the ratios.

  (a)  a raw llama-cpp-python greedy loop: ``llm.eval(prompt)``, then argmax of
       ``llama_get_logits_ith(ctx, -1)`` and ``llm.eval([tok])`` until end of
       generation or the output budget: the limit of naive decoding.
  (a=) the same raw loop, fed (c)'s answer one token per call (EOG ignored): what
       naive decoding pays for an answer of the same length. The stand-in seldom
       writes a whole permutation by itself, so (a) alone often stops early.
  (b)  dear-local greedy (``engine.rank_window``, decoding ``greedy``).
  (c)  dear-local constrained decoding with jump-forward and its checked draft of
       the next ids (the default ``constrained`` mode).
  (c0) constrained decoding with jump-forward only (no draft).
  (d)  dear-local first-token ranking.
  (e)  the model card's transformers code path (``tokenizer(prompt)``, then
       ``model.generate(do_sample=False)``) on CPU in bf16, with the same model
       (the stand-in's bf16 checkpoint) and the same prompt.

Every mode starts from an empty KV cache. Both wall-clock and process CPU time
are recorded; on a machine shared with other work, CPU time with one thread
(the default) is the steadier measure of the work each mode does. Goals (issue 4): decode phase (c) at
least 2.5x faster than (a); (d) at most 1.1x its prompt evaluation; (b)/(a) at
most 1.05; (e)/(b) at least 4.

    python bench/bench_decoding.py --queries 3 --passages 20 --template card --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from dear_local import store
from dear_local.backends.llama import LlamaCppBackend
from dear_local.contract import Profile
from dear_local.engine import prompt_ids, rank_window

ROOT = Path(__file__).resolve().parents[1]

STANDIN = "smollm2-135m-instruct:Q4_1"
CLOCKS = ("wall", "cpu")


def now() -> dict[str, float]:
    """Wall-clock and process CPU time. On a shared machine, CPU time with one
    thread measures the work done, without the waits for other processes."""
    return {"wall": time.perf_counter(), "cpu": time.process_time()}


def since(start: dict[str, float], end: dict[str, float] | None = None) -> dict[str, float]:
    end = end or now()
    return {k: end[k] - start[k] for k in CLOCKS}


class TimedBackend(LlamaCppBackend):
    """The llama.cpp backend, noting when the prompt evaluation (``prefill``) starts and ends."""

    def prefill(self, ids):
        self.prefill_start = now()
        logits = super().prefill(ids)
        self.prefill_end = now()
        return logits


def noveleval(data_dir: Path, n_queries: int, n_passages: int) -> list[tuple[str, list[str]]]:
    """The first NovelEval queries and passages, read from ``data_dir`` (checked)."""
    from dear_local_convert.slices import load_slice

    os.environ["DEAR_LOCAL_DATA"] = str(data_dir)
    cut = load_slice("noveleval", queries=n_queries, passages=n_passages)
    return [(q.text, list(q.passages)) for q in cut.queries]


def raw_loop(backend: LlamaCppBackend, ids: list[int], budget: int, feed: list[int] | None = None) -> dict:
    """(a): llama-cpp-python's eval and logits, nothing else. With ``feed``, (a=)."""
    import llama_cpp

    llm = backend.llm
    backend.rewind(0)
    eog = backend.eog_ids
    n_vocab = backend.n_vocab
    t0 = now()
    llm.eval(ids)
    t1 = now()
    out: list[int] = []
    calls = 1
    steps = len(feed) if feed is not None else budget
    for i in range(steps):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
        tok = int(logits.argmax())
        if feed is not None:
            tok = feed[i]
        elif tok in eog:
            break
        out.append(tok)
        if i + 1 < steps:
            llm.eval([tok])
            calls += 1
    t2 = now()
    backend.rewind(0)
    return {"prompt": since(t0, t1), "decode": since(t1, t2), "total": since(t0, t2),
            "tokens": len(out), "calls": calls}


def dear_mode(backend: TimedBackend, profile: Profile, query: str, passages: list[str]) -> tuple[dict, object]:
    """(b), (c), (d): the engine's whole window, prompt building and parsing included."""
    backend.rewind(0)
    t0 = now()
    res = rank_window(backend, profile, query, passages)
    t2 = now()
    backend.rewind(0)
    return {"prompt": since(backend.prefill_start, backend.prefill_end), "decode": since(backend.prefill_end, t2),
            "total": since(t0, t2), "tokens": len(res.output_ids), "calls": res.model_calls,
            "status": res.status}, res


def jump_forward_only(backend: TimedBackend, ids: list[int], n: int, id_base: int) -> dict:
    """(c0): constrained decoding with jump-forward but no draft, on the same prompt ids."""
    from dear_local.decoding import constrained

    backend.rewind(0)
    t0 = now()
    gen = constrained(backend, ids, n, id_base, speculate=False)
    t2 = now()
    backend.rewind(0)
    return {"prompt": since(backend.prefill_start, backend.prefill_end), "decode": since(backend.prefill_end, t2),
            "total": since(t0, t2), "tokens": len(gen.token_ids), "calls": gen.model_calls}


class CardPath:
    """(e): the model card's transformers code path, bf16 on CPU."""

    def __init__(self, threads: int, checkpoint: Path | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dear_local_convert.standins.smollm2 import standin_checkpoint

        torch.set_num_threads(threads)
        self.torch = torch
        path = checkpoint or standin_checkpoint()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        self.path = path

    def run(self, prompt: str, budget: int, expected_ids: list[int]) -> dict:
        t0 = now()
        inputs = self.tokenizer(prompt, return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
        total = since(t0)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        same = inputs["input_ids"][0].tolist() == expected_ids
        return {"total": total, "tokens": len(new), "same_prompt_ids": same,
                "text": self.tokenizer.decode(new, skip_special_tokens=True)}


def prompt_text(backend, profile: Profile, query: str, passages: list[str]) -> str:
    t = profile.tmpl
    if t.kind == "raw":
        return t.render_raw(query, passages)
    return backend.render_chat(t.render_messages(query, passages))


def fastest(runs: list[dict]) -> dict:
    """Per phase and clock, the fastest of repeated runs (the least disturbed by other load)."""
    out = dict(runs[0])
    for part in ("prompt", "decode", "total"):
        out[part] = {c: min(r[part][c] for r in runs) for c in CLOCKS}
    return out


def describe(r: dict) -> str:
    parts = []
    for part in ("prompt", "decode", "total"):
        if part in r:
            parts.append(f"{part} {r[part]['wall']:8.3f}s wall {r[part]['cpu']:8.3f}s cpu")
    if "calls" in r:
        parts.append(f"calls {r['calls']:4d}")
    parts.append(f"tokens {r['tokens']:4d}")
    return " | ".join(parts)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def measure_window(backend, base, q: int, query: str, passages: list[str], repeat: int, card) -> dict:
    """Every mode on one window, interleaved ``repeat`` times; the fastest run of each is kept."""
    ids = prompt_ids(backend, base, query, passages)
    n = len(passages)
    budget = base.max_new_tokens(n)
    row = {"query": q, "prompt_tokens": len(ids)}
    runs: dict[str, list[dict]] = {m: [] for m in ("a", "b", "c", "c0", "a=", "d")}
    for _ in range(repeat):  # the modes interleave, so load changes hit them alike
        runs["a"].append(raw_loop(backend, ids, budget))
        r, greedy = dear_mode(backend, base.with_(decoding="greedy"), query, passages)
        runs["b"].append(r)
        r, cons = dear_mode(backend, base.with_(decoding="constrained"), query, passages)
        runs["c"].append(r)
        runs["c0"].append(jump_forward_only(backend, ids, n, base.tmpl.id_base))
        runs["a="].append(raw_loop(backend, ids, budget, feed=cons.output_ids))
        r, first = dear_mode(backend, base.with_(decoding="first-token"), query, passages)
        runs["d"].append(r)
    for m, rs in runs.items():
        row[m] = fastest(rs)
    if card is not None:
        row["e"] = card.run(prompt_text(backend, base, query, passages), budget, ids)
    from dear_local_convert.agreement.metrics import exact_match, kendall_tau, top1_agreement

    row["first_vs_constrained"] = {"exact": exact_match(first.order, cons.order),
                                   "tau": kendall_tau(first.order, cons.order),
                                   "top1": top1_agreement(first.order, cons.order)}
    row["greedy_text"] = greedy.raw_text[:80]
    row["constrained_text"] = cons.raw_text
    print(f"\nquery {q}: {len(ids)} prompt tokens")
    for m in ("a", "a=", "b", "c", "c0", "d", "e"):
        if m in row:
            print(f"  ({m:2}) " + describe(row[m]))
    print(f"  greedy wrote {row['greedy_text']!r}; constrained {cons.raw_text[:60]!r}...")
    if "e" in row:
        print(f"  (e) wrote {row['e']['text'][:60]!r}; same prompt ids: {row['e']['same_prompt_ids']}")
    return row


def summarize(rows: list[dict], clock: str) -> tuple[dict, list[dict]]:
    """Sums over the windows and the goal ratios, printed; returns both."""
    modes = [m for m in ("a", "a=", "b", "c", "c0", "d", "e") if m in rows[0]]
    sums = {m: {part: {c: sum(r[m][part][c] for r in rows) for c in CLOCKS}
                for part in ("prompt", "decode", "total") if part in rows[0][m]}
            for m in modes}
    for m in modes:
        sums[m]["tokens"] = sum(r[m]["tokens"] for r in rows)
        if "calls" in rows[0][m]:
            sums[m]["calls"] = sum(r[m]["calls"] for r in rows)
    print(f"\nsums over {len(rows)} windows")
    for m in modes:
        print(f"  ({m:2}) " + describe(sums[m]))

    def t(mode, part, clock=clock):
        return sums[mode][part][clock]

    checks = [
        ("decode (a) / decode (c)", lambda c: ratio(t("a", "decode", c), t("c", "decode", c)), ">=", 2.5),
        ("decode (a=) / decode (c)", lambda c: ratio(t("a=", "decode", c), t("c", "decode", c)), ">=", 2.5),
        ("decode (a=) / decode (c0)", lambda c: ratio(t("a=", "decode", c), t("c0", "decode", c)), ">=", 2.5),
        ("(d) total / (d) prompt eval", lambda c: ratio(t("d", "total", c), t("d", "prompt", c)), "<=", 1.1),
        ("(d) total / (a) prompt eval", lambda c: ratio(t("d", "total", c), t("a", "prompt", c)), "<=", 1.1),
        ("(b) total / (a) total", lambda c: ratio(t("b", "total", c), t("a", "total", c)), "<=", 1.05),
    ]
    if "e" in sums:
        checks.append(("(e) total / (b) total", lambda c: ratio(t("e", "total", c), t("b", "total", c)), ">=", 4.0))
    print(f"\nratios (goal judged on {clock} time)")
    results = []
    for label, fn, op, goal in checks:
        value = fn(clock)
        ok = value >= goal if op == ">=" else value <= goal
        other = [c for c in CLOCKS if c != clock][0]
        results.append({"ratio": label, clock: value, other: fn(other), "goal": f"{op} {goal}", "met": ok})
        print(f"  {label:30} {value:8.2f}  ({other} {fn(other):6.2f})   goal {op} {goal:<5} {'met' if ok else 'MISSED'}")
    fa = [r["first_vs_constrained"] for r in rows]
    print(f"  first-token vs constrained: exact {sum(x['exact'] for x in fa)}/{len(fa)}, "
          f"mean tau {statistics.mean(x['tau'] for x in fa):.3f}, top-1 {sum(x['top1'] for x in fa)}/{len(fa)}")
    return sums, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=3, help="NovelEval queries 0..N-1 (one window each)")
    ap.add_argument("--passages", type=int, default=20, help="passages per window")
    ap.add_argument("--template", default="card", choices=["card", "rankgpt-chat"])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for llama.cpp and torch (default 1)")
    ap.add_argument("--clock", choices=CLOCKS, default="cpu", help="the clock the ratios use (both are printed)")
    ap.add_argument("--model", default=STANDIN, help="GGUF path or NAME:QUANT (default: the stand-in)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode and window; the fastest is kept")
    ap.add_argument("--hf-checkpoint", type=Path, help="bf16 HF checkpoint for (e) (default: the stand-in's)")
    ap.add_argument("--no-hf", action="store_true", help="skip (e), the transformers path")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args(argv)

    path = Path(args.model) if args.model.endswith(".gguf") else store.pull(args.model)
    base = Profile(template=args.template)
    backend = TimedBackend(path, n_ctx=base.context_tokens() + 512, n_threads=args.threads)
    windows = noveleval(args.data, args.queries, args.passages)
    card = None if args.no_hf else CardPath(args.threads, args.hf_checkpoint)
    backend.prefill(backend.tokenize("warm up the weights", add_bos=backend.add_bos))
    import platform

    print(f"model {path.name}; template {args.template}; {args.queries} windows of {args.passages}; "
          f"{args.threads} threads; best of {args.repeat}; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    rows = [measure_window(backend, base, q, query, passages, args.repeat, card) for q, (query, passages) in enumerate(windows)]
    sums, results = summarize(rows, args.clock)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "sums": sums, "ratios": results}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
