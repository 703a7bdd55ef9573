"""Speed and memory on DeAR's real shapes: dear-local against the model card's transformers path.

Speed depends on the shape, the quant type and the answer length, not on the
weights, so this builds random-weight checkpoints with the exact configs of
Llama-3.2-1B (``--shape 1b``) and Llama-3.1-8B (``--shape 8b``, the shape of
DeAR-8B), with the real Llama-3 tokenizer and llama3 rope scaling, converts
them to a BF16 GGUF and quantizes them (every artifact is cached in
``--workdir``, so reruns skip building). Then it times one window of the
``card`` prompt over NovelEval query 0 and its first ``--passages`` passages,
each path in a fresh child process (peak RSS is the child's own high-water
mark, VmHWM):

  (c)  dear-local, ``constrained`` decoding with jump-forward and the draft
       (the default mode; ``engine.rank_window``): prompt tokens/s, decode
       seconds, model calls, total seconds, peak RSS. Constrained decoding
       writes a whole permutation whatever the random weights prefer, so
       every path below writes the same number of answer tokens.
  (a=) plain decoding in the same process: from (c)'s prompt (kept in the KV
       cache), (c)'s answer fed to raw llama-cpp-python one token per call,
       with the argmax read each step: the decode phase without jump-forward
       and draft.
  (b), (a)  with ``--raw TYPE``: dear-local ``greedy`` and a raw
       llama-cpp-python greedy loop (``eval``, argmax, ``eval``), each a whole
       window, to show that the runtime adds nothing to llama.cpp.
  (e)  the model card's path (``--card bf16 fp32``): the checkpoint in
       transformers, ``tokenizer(prompt)`` then ``model.generate(do_sample=False)``,
       on the same CPU and threads. A logits processor forces (c)'s answer, token
       by token, with ``min_new_tokens = max_new_tokens = len(answer)``, so it runs
       the same number of decode steps; its first call marks the end of the
       prompt evaluation.

    python bench/bench_shapes.py --shape 1b --workdir /tmp/bench-shapes --threads 2 \\
        --types BF16 Q8_0 Q4_K_M Q4_0 IQ4_XS --passages 20 --card bf16 fp32 --raw Q4_K_M
    python bench/bench_shapes.py --shape 8b --workdir /tmp/bench-shapes --threads 2 --types Q4_K_M BF16 --passages 20 --card bf16
    python bench/bench_shapes.py --shape 8b --workdir /tmp/bench-shapes --threads 2 --types Q4_K_M --passages 5 \\
        --card --cpu-buffers plain

The 8B shape needs about 16 GB of disk for the checkpoint, 16 GB for the BF16 GGUF (it can be
deleted once the quantized files exist) and 5 GB for Q4_K_M; its transformers bf16 run peaks
at about 16 GB of RAM.

``--repeat N`` runs every path N times, in rounds, and keeps each path's fastest run
(this VM's speed drifts with other load). ``--build-only`` stops after building. Results
go to ``<workdir>/<shape>-<passages>p.json`` (``...p-plain.json`` with ``--cpu-buffers
plain``) and are printed as markdown tables; ``--tables FILE`` prints them again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench_convert import LLAMA31_8B, tensor_shapes, write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]



def llama32_config(**size) -> dict:
    """A Llama-3.2 config.json: Llama-3.1-8B's but for its ``size`` keys, tied embeddings and rope factor 32."""
    return {**LLAMA31_8B, **size, "rope_scaling": {**LLAMA31_8B["rope_scaling"], "factor": 32.0},
            "tie_word_embeddings": True, "transformers_version": "4.45.0.dev0"}


# meta-llama/Llama-3.2-1B-Instruct's and Llama-3.2-3B's config.json (the 3B is DeAR-P-3B's base).
LLAMA32_1B = llama32_config(head_dim=64, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16)
LLAMA32_3B = llama32_config(head_dim=128, hidden_size=3072, intermediate_size=8192, num_attention_heads=24,
                            num_hidden_layers=28)
SHAPES = {"1b": (LLAMA32_1B, 1), "8b": (LLAMA31_8B, 4)}  # config, safetensors shards
VOCAB_GGUF = ROOT.parent / "shared" / "fixtures" / "ggml-vocab-llama-bpe.gguf"


# -- building (cached) ---------------------------------------------------------------


def shape_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """bench_convert's tensor list, for any Llama config: q/o sized by heads x head_dim, no lm_head when tied."""
    h, q = cfg["hidden_size"], cfg["num_attention_heads"] * cfg["head_dim"]
    out = []
    for name, shape in tensor_shapes(cfg):
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        if name.endswith("q_proj.weight"):
            shape = (q, h)
        elif name.endswith("o_proj.weight"):
            shape = (h, q)
        out.append((name, shape))
    return out


def write_checkpoint(out: Path, cfg: dict, shards: int, vocab_gguf: Path, seed: int = 0) -> Path:
    """A random bf16 checkpoint with config ``cfg``, streamed one tensor at a time (bench_convert's writer)."""
    return write_random_checkpoint(out, cfg, shape_tensors(cfg), shards, vocab_gguf, seed)


def build(shape: str, work: Path, types: list[str], threads: int, log: dict) -> dict[str, Path]:
    """Checkpoint, BF16 GGUF and the quantized types for ``shape``; whatever exists is reused.

    The BF16 GGUF is only made when a type asked for is missing (it may be deleted
    once the quantized files exist, to save disk: 16 GB for the 8B shape).
    """
    cfg, shards = SHAPES[shape]
    ckpt = work / f"{shape}-checkpoint"
    gdir = work / f"{shape}-gguf"
    name = f"random-llama-{shape}"
    if not (ckpt / "config.json").is_file():
        print(f"[{shape}] writing the random checkpoint -> {ckpt}", flush=True)
        t = time.perf_counter()
        write_checkpoint(ckpt, cfg, shards, VOCAB_GGUF)
        log[f"{shape}/checkpoint_s"] = round(time.perf_counter() - t, 1)
    bf16 = gdir / f"{name}-BF16.gguf"
    missing = [t for t in types if not (gdir / f"{name}-{t}.gguf").is_file()]
    if missing and not bf16.is_file():
        print(f"[{shape}] converting to BF16 ...", flush=True)
        r = child("convert", src=str(ckpt), out=str(gdir), name=name)
        log[f"{shape}/convert"] = r
        print(f"  {r['seconds']} s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    files = {"BF16": bf16}
    for qtype in types:
        if qtype == "BF16":
            continue
        dest = gdir / f"{name}-{qtype}.gguf"
        if not dest.is_file():
            print(f"[{shape}] quantizing to {qtype} ...", flush=True)
            r = child("quantize", src=str(bf16), out=str(gdir), qtype=qtype, threads=threads)
            log[f"{shape}/quantize_{qtype}"] = r
            print(f"  {r['seconds']} s, {r['result']['bytes'] / 1e9:.2f} GB, "
                  f"{r['result']['bits_per_weight']:.2f} bits/weight", flush=True)
        files[qtype] = dest
    return {t: files[t] for t in types}


# -- children: every measured path runs in a fresh process ------------------------------


# --laptop: the same CPU limited to AVX2, as on a laptop without AVX-512 or AMX. torch's own
# kernels (ATen) and oneDNN's are capped at AVX2; llama.cpp runs its haswell (AVX2) variant.
LAPTOP_ENV = {
    "card": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "llama": {"DEAR_LOCAL_CPU_VARIANT": "haswell"},
}


def child(kind: str, env_extra: dict | None = None, **kw) -> dict:
    """Run ``kind`` in a fresh process of this script; its wall time, CPU seconds, peak RSS (VmHWM) and JSON result."""
    env = {**os.environ, "DEAR_LOCAL_NO_PROGRESS": "1", **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(kw)],
                          stdout=subprocess.PIPE, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed ({proc.returncode}): {kw}")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {"seconds": round(wall, 2), "cpu_seconds": round(out.pop("cpu_seconds"), 2),
            "peak_rss_gb": round(out.pop("vmhwm_kb") * 1024 / 1e9, 3), "result": out}


def _vmhwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def run_child(kind: str, kw: dict) -> None:
    result = CHILDREN[kind](**kw)
    result["vmhwm_kb"] = _vmhwm_kb()
    t = os.times()
    result["cpu_seconds"] = t.user + t.system
    print(json.dumps(result), flush=True)


def child_convert(src: str, out: str, name: str) -> dict:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    p = convert_checkpoint(src, out, "bf16", name=name, force=True)
    return {"file": str(p), "bytes": p.stat().st_size}


def child_quantize(src: str, out: str, qtype: str, threads: int) -> dict:
    from dear_local_convert.quant.quantize import quantize

    m = quantize(src, [qtype], out, threads=threads, force=True)
    e = [e for e in m["files"] if e["type"] == qtype][0]
    return {k: e[k] for k in ("file", "bytes", "bits_per_weight", "n_params")}


def _window(data: str, passages: int) -> tuple[str, list[str]]:
    from bench_decoding import noveleval

    return noveleval(Path(data), 1, passages)[0]


def child_llama(path: str, data: str, passages: int, threads: int, buffers: str, raw: bool,
                mmap: str = "auto", flash_attn: bool = False) -> dict:
    """(c) and (a=), and with ``raw`` (b) and (a), on one GGUF."""
    from bench_decoding import TimedBackend, dear_mode, now, raw_loop, since

    from dear_local.contract import Profile
    from dear_local.engine import prompt_ids

    query, docs = _window(data, passages)
    base = Profile(template="card")
    t = now()
    backend = TimedBackend(path, n_ctx=base.context_tokens(), n_threads=threads, cpu_buffers=buffers,
                           use_mmap={"auto": None, "on": True, "off": False}[mmap], flash_attn=flash_attn)
    backend.prefill(backend.tokenize("warm up the weights", add_bos=backend.add_bos))  # pages the weights in
    load = since(t)
    ids = prompt_ids(backend, base, query, docs)
    out = {"load": load, "prompt_tokens": len(ids), "prompt_ids": ids, "buffers": backend.cpu_buffers.mode, "n_ctx": backend.n_ctx}

    c, res = dear_mode(backend, base.with_(decoding="constrained"), query, docs)
    out["c"] = c | {"answer_ids": res.output_ids, "answer": res.raw_text}
    # (a=): from the same prompt, still in the KV cache, the same answer one token per call.
    llm = backend.llm
    backend.rewind(0)
    llm.n_tokens = len(ids)  # keep the prompt's cache; llama-cpp-python's eval drops what lies after
    import llama_cpp

    t = now()
    for tok in res.output_ids[:-1]:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(backend.n_vocab,))
        int(logits.argmax())
        llm.eval([tok])
    out["a="] = {"decode": since(t), "calls": len(res.output_ids) - 1, "tokens": len(res.output_ids)}
    if raw:
        budget = base.max_new_tokens(len(docs))
        b, _ = dear_mode(backend, base.with_(decoding="greedy"), query, docs)
        out["b"] = b
        out["a"] = raw_loop(backend, ids, budget)
    return out


class ForceAnswer:
    """A ``generate`` logits processor that forces ``answer`` token by token and notes when it is first called."""

    def __init__(self, answer: list[int]) -> None:
        self.answer = answer
        self.first_call: float | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.first_call is None:
            from bench_decoding import now

            self.first_call = now()
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.answer[step]] = 0.0
        return forced


def child_card(checkpoint: str, dtype: str, data: str, passages: int, threads: int, answer: list[int],
               prompt_ids: list[int]) -> dict:
    """(e): the model card's transformers path, forced to ``answer``."""
    import torch
    from bench_decoding import now, since
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from dear_local.contract import Profile

    torch.set_num_threads(threads)
    query, docs = _window(data, passages)
    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
    load = time.perf_counter() - t
    prompt = Profile(template="card").tmpl.render_raw(query, docs)
    force = ForceAnswer(answer)
    t0 = now()
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=len(answer), min_new_tokens=len(answer),
                             logits_processor=LogitsProcessorList([force]))
    t2 = now()
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    return {"load": load, "prompt": since(t0, force.first_call), "decode": since(force.first_call, t2),
            "total": since(t0, t2), "calls": len(new), "tokens": len(new), "same_answer": new == answer,
            "same_prompt_ids": inputs["input_ids"][0].tolist() == prompt_ids,
            "prompt_tokens": int(inputs["input_ids"].shape[1]), "torch_threads": torch.get_num_threads()}


CHILDREN = {"convert": child_convert, "quantize": child_quantize, "llama": child_llama, "card": child_card}


# -- the driver ----------------------------------------------------------------------


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def measure(kind: str, label: str, env_extra: dict | None = None, **kw) -> dict:
    before = loadavg()
    print(f"{label} ...", flush=True)
    r = child(kind, env_extra, **kw)
    r["load_before"], r["load_after"] = before, loadavg()
    return r


def wall(x) -> float:
    return x["wall"] if isinstance(x, dict) else x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), help="1b: Llama-3.2-1B; 8b: Llama-3.1-8B (DeAR-8B)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-shapes"))
    ap.add_argument("--types", nargs="+", default=["BF16", "Q8_0", "Q4_K_M", "Q4_0", "IQ4_XS"])
    ap.add_argument("--passages", type=int, default=20, help="passages in the window (NovelEval query 0)")
    ap.add_argument("--threads", type=int, default=2, help="threads for llama.cpp, torch and the quantizer")
    ap.add_argument("--cpu-buffers", default="auto", choices=["auto", "extra", "plain"])
    ap.add_argument("--mmap", default="auto", choices=["auto", "on"],
                    help="auto: the loader's rule (no mmap for repacked weights); on: always mapped (the old loader)")
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention")
    ap.add_argument("--laptop", action="store_true",
                    help="limit both paths to AVX2: torch/oneDNN capped at AVX2, llama.cpp's haswell variant")
    ap.add_argument("--card", nargs="*", default=["bf16"], choices=["bf16", "fp32"],
                    help="dtypes for the model card's transformers path (none: skip it)")
    ap.add_argument("--raw", nargs="*", default=[], help="types also run as (b) dear-local greedy and (a) raw greedy")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over every path; each path's fastest run counts")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--tables", type=Path, help="print the tables of a results JSON written earlier, and stop")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child[0], json.loads(args.child[1]))
        return 0
    if args.tables:
        print(tables(json.loads(args.tables.read_text())))
        return 0
    if not args.shape:
        ap.error("--shape is required")
    if args.laptop:  # this process too: the env line below then names the llama.cpp variant the children run
        os.environ.update(LAPTOP_ENV["llama"])

    import llama_cpp

    from dear_local.backends.loader import choose_cpu_buffers, llama_system_info
    from dear_local.env_report import cpu_model

    work = args.workdir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    build_log: dict = {}
    files = build(args.shape, work, args.types, args.threads, build_log)
    if build_log:
        (work / f"{args.shape}-build.json").write_text(json.dumps(build_log, indent=1))
    if args.build_only:
        return 0

    from dear_local.backends.cpu_variant import ensure_cpu_backend

    env = {"cpu": cpu_model(), "cpus": os.cpu_count(), "llama_cpp_python": llama_cpp.__version__,
           "llama_cpp_system_info": llama_system_info().strip(), "threads": args.threads,
           "cpu_variant": ensure_cpu_backend().label, "mmap": args.mmap, "flash_attn": args.flash_attn,
           "laptop": args.laptop,
           "cpu_buffers": f"{args.cpu_buffers} -> {choose_cpu_buffers(args.cpu_buffers).mode}"}
    print(f"CPU: {env['cpu']} ({env['cpus']} cpus); llama.cpp: {env['llama_cpp_system_info']}", flush=True)
    results: dict = {"shape": args.shape, "passages": args.passages, "env": env, "gguf": {}, "card": {}}
    common = {"data": str(args.data), "passages": args.passages, "threads": args.threads}
    runs: dict[str, list[dict]] = {}  # every run of every path; the fastest counts
    for rnd in range(args.repeat):  # rounds interleave the paths, so load changes hit them alike
        for qtype, path in files.items():
            r = measure("llama", f"[{rnd + 1}/{args.repeat}] dear-local {qtype}",
                        LAPTOP_ENV["llama"] if args.laptop else None, path=str(path),
                        buffers=args.cpu_buffers, raw=qtype in args.raw, mmap=args.mmap,
                        flash_attn=args.flash_attn, **common)
            r["bytes"] = path.stat().st_size
            runs.setdefault(qtype, []).append(r)
            show_llama(qtype, r)
        results["gguf"] = {q: fastest_run(runs[q], lambda x: x["result"]["c"]["total"]) for q in files}
        best = min(results["gguf"], key=lambda q: wall(results["gguf"][q]["result"]["c"]["total"]))
        ref = results["gguf"][best]["result"]
        for dtype in args.card:
            r = measure("card", f"[{rnd + 1}/{args.repeat}] card path transformers {dtype}",
                        LAPTOP_ENV["card"] if args.laptop else None, checkpoint=str(work / f"{args.shape}-checkpoint"),
                        dtype={"bf16": "bfloat16", "fp32": "float32"}[dtype], answer=ref["c"]["answer_ids"],
                        prompt_ids=ref["prompt_ids"], **common)
            runs.setdefault(f"card-{dtype}", []).append(r)
            e = r["result"]
            print(f"  total {wall(e['total']):.2f} s (prompt {wall(e['prompt']):.2f} s, decode {wall(e['decode']):.2f} s, "
                  f"{e['calls']} calls), "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB, same answer {e['same_answer']}", flush=True)
        results["card"] = {d: fastest_run(runs[f"card-{d}"], lambda x: x["result"]["total"]) for d in args.card}
    results["best"] = best
    tag = "" if args.cpu_buffers == "auto" else f"-{args.cpu_buffers}"
    tag += ("-mmap" if args.mmap == "on" else "") + ("-fa" if args.flash_attn else "") + ("-laptop" if args.laptop else "")
    out = work / f"{args.shape}-{args.passages}p{tag}.json"
    out.write_text(json.dumps(results, indent=1))
    print(tables(results))
    print(f"\nwritten to {out}")
    return 0


def fastest_run(rs: list[dict], total) -> dict:
    """The run with the smallest wall-clock total, noting every run's total (the least disturbed by other load)."""
    best = dict(min(rs, key=lambda r: wall(total(r))))
    best["totals_wall"] = [round(wall(total(r)), 2) for r in rs]
    return best


def show_llama(qtype: str, r: dict) -> None:
    x = r["result"]
    c, a = x["c"], x["a="]
    print(f"  {x['prompt_tokens']} prompt tokens; (c) total {wall(c['total']):.2f} s, prompt {wall(c['prompt']):.2f} s, "
          f"decode {wall(c['decode']):.2f} s in {c['calls']} calls; (a=) decode {wall(a['decode']):.2f} s in "
          f"{a['calls']} calls; peak RSS {r['peak_rss_gb']:.2f} GB; load {r['load_before']}->{r['load_after']}", flush=True)
    if "b" in x:
        print(f"  (b) greedy total {wall(x['b']['total']):.2f} s, {x['b']['tokens']} tokens; "
              f"(a) raw greedy total {wall(x['a']['total']):.2f} s, {x['a']['tokens']} tokens", flush=True)


def runs_of(r: dict) -> str:
    return ", ".join(f"{t:.1f}" for t in r.get("totals_wall", []))


def tables(res: dict) -> str:
    """Markdown tables of one run."""
    n_tok = next(iter(res["gguf"].values()))["result"]["prompt_tokens"]
    lines = [f"\n{res['shape']} shape, card template, NovelEval query 0 x {res['passages']} passages "
             f"({n_tok} prompt tokens), {res['env']['threads']} threads, {res['env']['cpu']}",
             f"llama.cpp CPU variant {res['env'].get('cpu_variant', '?')}, mmap {res['env'].get('mmap', 'on')}, "
             f"flash attention {'on' if res['env'].get('flash_attn') else 'off'}"
             + (", laptop class (AVX2 only)" if res["env"].get("laptop") else ""),
             "", "| path | file GB | prompt tokens/s | prompt s | decode s | model calls | total s | CPU s | peak RSS GB | every run's total s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for q, r in res["gguf"].items():
        c = r["result"]["c"]
        lines.append(f"| dear-local {q} (c) | {r['bytes'] / 1e9:.2f} | {n_tok / wall(c['prompt']):.1f} | "
                     f"{wall(c['prompt']):.2f} | {wall(c['decode']):.2f} | {c['calls']} | {wall(c['total']):.2f} | "
                     f"{r.get('cpu_seconds', float('nan')):.1f} | {r['peak_rss_gb']:.2f} | {runs_of(r)} |")
    for d, r in res["card"].items():
        e = r["result"]
        lines.append(f"| card path, transformers {d} | | {e['prompt_tokens'] / wall(e['prompt']):.1f} | "
                     f"{wall(e['prompt']):.2f} | {wall(e['decode']):.2f} | {e['calls']} | {wall(e['total']):.2f} | "
                     f"{r.get('cpu_seconds', float('nan')):.1f} | {r['peak_rss_gb']:.2f} | {runs_of(r)} |")
    best = res["gguf"][res["best"]]
    lines += ["", f"best GGUF: {res['best']}"]
    for d, r in res["card"].items():
        e, c = r["result"], best["result"]["c"]
        lines.append(f"card {d} / dear-local {res['best']}: time {wall(e['total']) / wall(c['total']):.2f}x wall, "
                     f"{e['total']['cpu'] / c['total']['cpu']:.2f}x process CPU time; dear-local's peak RSS is "
                     f"{best['peak_rss_gb'] / r['peak_rss_gb']:.2f} of the card's")
    lines += ["", "| GGUF | decode (a=) s, one token per call | calls | decode (c) s | calls | (a=)/(c) |", "|---|---|---|---|---|---|"]
    for q, r in res["gguf"].items():
        c, a = r["result"]["c"], r["result"]["a="]
        lines.append(f"| {q} | {wall(a['decode']):.2f} | {a['calls']} | {wall(c['decode']):.2f} | {c['calls']} | "
                     f"{wall(a['decode']) / wall(c['decode']):.2f} |")
    raws = [(q, r["result"]) for q, r in res["gguf"].items() if "b" in r["result"]]
    if raws:
        lines += ["", "| GGUF | (b) dear-local greedy s | (a) raw llama-cpp-python greedy s | tokens (b)/(a) | "
                  "(b)/(a) wall | (b)/(a) CPU time |", "|---|---|---|---|---|---|"]
        for q, x in raws:
            b, a = x["b"]["total"], x["a"]["total"]
            lines.append(f"| {q} | {wall(b):.2f} | {wall(a):.2f} | {x['b']['tokens']}/{x['a']['tokens']} | "
                         f"{wall(b) / wall(a):.3f} | {b['cpu'] / a['cpu']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
