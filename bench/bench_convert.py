"""Benchmark the converter and quantizer on an 8B-shaped synthetic checkpoint.

    python bench/bench_convert.py --workdir /tmp/bench8b               # the full Llama-3.1-8B shape
    python bench/bench_convert.py --workdir /tmp/bench4 --layers 4     # a quick reduced run
    python bench/bench_convert.py --workdir /tmp/bench8b --lora        # also the LoRA figures (below)

It writes a checkpoint with the exact Llama-3.1-8B config (optionally fewer
layers), random bf16 weights and 4 safetensors shards, plus the real Llama-3
tokenizer, then measures, each in a fresh child process:

- ``convert`` to BF16: wall time and peak RSS;
- a plain copy of the same shard bytes (read + write + fsync): wall time, the
  baseline the conversion is compared against (goal: convert <= 2x copy);
- ``quantize`` to Q4_K_M: wall time, size and bits per weight.

With ``--lora`` it also writes an 8B-shaped PEFT adapter (rank 16, alpha 32, the seven
projections of every block, bf16: the shape of DeAR's LoRA release) and measures:

- ``convert --lora``: the merged conversion to BF16, wall time and peak RSS against the
  plain conversion (goal: peak RSS <= 3 GB);
- ``convert-lora``: the GGUF adapter's size and conversion time;
- load time and prompt speed (``--prompt-tokens``, 2 threads by default) of the base
  plus the runtime adapter against the merged file, both BF16, each load in a fresh
  process, alternated ``--rounds`` times; with the quantize step, also both as Q4_K_M.

The full 8B run needs about 16 GB for the checkpoint, 16 GB for the BF16 GGUF,
16 GB for the copy (deleted right after) and 5 GB for Q4_K_M.
Results are printed and written to ``<workdir>/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dear_local_convert.standins.tiny_llama3 import LLAMA31_8B

ROOT = Path(__file__).resolve().parents[1]


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (ff, h)),
            (p + "mlp.up_proj.weight", (ff, h)),
            (p + "mlp.down_proj.weight", (h, ff)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def _random_bf16(rng: np.random.Generator, n: int, one_d: bool, f, chunk: int = 1 << 24) -> None:
    """Write ``n`` random bf16 values to ``f`` in chunks (norms near 1, weights ~N(0, 0.02))."""
    done = 0
    while done < n:
        k = min(chunk, n - done)
        x = rng.standard_normal(k, dtype=np.float32) * np.float32(0.02)
        if one_d:
            x += np.float32(1.0)
        f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
        done += k


def write_checkpoint(out: Path, layers: int, shards: int, vocab_gguf: Path, seed: int = 0) -> Path:
    """Stream a random bf16 checkpoint of the 8B shape (``layers`` blocks) to ``out``."""
    cfg = dict(LLAMA31_8B, num_hidden_layers=layers)
    return write_random_checkpoint(out, cfg, tensor_shapes(cfg), shards, vocab_gguf, seed)


def write_random_checkpoint(out: Path, cfg: dict, shapes: list, shards: int, vocab_gguf: Path, seed: int = 0) -> Path:
    """Stream a random bf16 checkpoint with config ``cfg`` and tensors ``shapes`` [(name, shape)]
    to ``out`` in ``shards`` safetensors files (one tensor in memory at a time); kept if it exists."""
    from dear_local_convert.standins.tiny_llama3 import write_llama3_tokenizer

    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    total = sum(int(np.prod(s)) * 2 for _, s in shapes)
    per_shard = total / shards
    groups: list[list] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * 2
        if size + nbytes > per_shard * len(groups) and groups[-1] and len(groups) < shards:
            groups.append([])
        groups[-1].append((name, shape))
        size += nbytes
    rng = np.random.default_rng(seed)
    weight_map = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in group:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(tmp / fname, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for name, shape in group:
                _random_bf16(rng, int(np.prod(shape)), len(shape) == 1, f)
        print(f"  wrote {fname} ({offset / 1e9:.2f} GB)", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    write_llama3_tokenizer(vocab_gguf, tmp)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    tmp.rename(out)
    return out


PEAK_RSS = """
import json
hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]
print(json.dumps({'vmhwm_kb': int(hwm[0]) if hwm else None}))
"""


def run_child(code: str) -> dict:
    """Run Python ``code`` in a fresh process; return its wall time, peak RSS and printed JSON.

    Peak RSS is the child's own high-water mark (VmHWM), read by the child at its end.
    getrusage's ru_maxrss is not used: a child started by fork or vfork inherits the
    parent's RSS high-water mark, which would count the benchmark driver's memory.
    """
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + PEAK_RSS], stdout=subprocess.PIPE, cwd=ROOT,
                          env={**os.environ, "DEAR_LOCAL_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {code}")
    lines = proc.stdout.decode().strip().splitlines()
    hwm = json.loads(lines[-1])["vmhwm_kb"]
    return {"seconds": round(wall, 2), "peak_rss_gb": round(hwm * 1024 / 1e9, 3) if hwm else None,
            "result": json.loads(lines[-2]) if len(lines) > 1 else None}


COPY = """
import json, os, sys
from pathlib import Path
src, dst = Path({src!r}), Path({dst!r})
dst.mkdir(parents=True, exist_ok=True)
n = 0
for f in sorted(src.glob('*.safetensors')):
    with open(f, 'rb') as fin, open(dst / f.name, 'wb') as fout:
        while True:
            b = fin.read(1 << 24)
            if not b:
                break
            fout.write(b)
            n += len(b)
        fout.flush()
        os.fsync(fout.fileno())
print(json.dumps({{'bytes': n}}))
"""

CONVERT = """
import json
from dear_local_convert.to_gguf.writer import convert_checkpoint
p = convert_checkpoint({src!r}, {out!r}, 'bf16', name='synthetic-llama31-8b', force=True)
print(json.dumps({{'file': str(p), 'bytes': p.stat().st_size}}))
"""

QUANTIZE = """
import json
from dear_local_convert.quant.quantize import quantize
m = quantize({src!r}, ['Q4_K_M'], {out!r}, threads={threads!r}, force=True)
e = [e for e in m['files'] if e['type'] == 'Q4_K_M'][0]
print(json.dumps({{k: e[k] for k in ('file', 'bytes', 'bits_per_weight', 'n_params')}}))
"""


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_adapter(out: Path, cfg: dict, rank: int = 16, alpha: int = 32, seed: int = 1) -> Path:
    """A random PEFT-layout LoRA adapter for ``cfg``'s shapes: adapter_config.json + adapter_model.safetensors (bf16)."""
    import torch
    from safetensors.torch import save_file

    if (out / "adapter_config.json").is_file():
        return out
    rng = np.random.default_rng(seed)
    shapes = {name.removesuffix(".weight"): shape for name, shape in tensor_shapes(cfg)}
    data = {}
    for i in range(cfg["num_hidden_layers"]):
        for t in LORA_TARGETS:
            part = "self_attn" if t in LORA_TARGETS[:4] else "mlp"
            module = f"model.layers.{i}.{part}.{t}"
            n_out, n_in = shapes[module]
            for half, shape in (("A", (rank, n_in)), ("B", (n_out, rank))):
                x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.5 / shape[1] ** 0.5)
                data[f"base_model.model.{module}.lora_{half}.weight"] = torch.from_numpy(x).to(torch.bfloat16)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(data, str(tmp / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
              "target_modules": list(LORA_TARGETS), "bias": "none", "use_rslora": False, "use_dora": False,
              "base_model_name_or_path": "synthetic/llama31-8b-shape"}
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(out)
    return out


CONVERT_LORA = """
import json
from dear_local_convert.to_gguf.writer import convert_checkpoint
p = convert_checkpoint({src!r}, {out!r}, 'bf16', name='synthetic-merged', force=True, lora={lora!r})
print(json.dumps({{'file': str(p), 'bytes': p.stat().st_size}}))
"""

ADAPTER_GGUF = """
import json
from dear_local_convert.lora.gguf_adapter import convert_adapter
p = convert_adapter({lora!r}, {base!r}, {out!r}, force=True)
print(json.dumps({{'file': str(p), 'bytes': p.stat().st_size}}))
"""

RUNTIME = """
import json, time
from dear_local.backends.loader import open_llama
ids = [128000] + [1000 + i for i in range({n})]
t = time.perf_counter()
llm, _ = open_llama({model!r}, lora={lora!r}, n_ctx={n} + 16, n_batch=512, n_threads={threads}, verbose=False)
load = time.perf_counter() - t
best = None
for _ in range(2):
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    s = time.perf_counter() - t
    best = s if best is None else min(best, s)
llm.close()
print(json.dumps({{'load_seconds': round(load, 2), 'prompt_tokens_per_s': round(len(ids) / best, 1)}}))
"""


def lora_runtime(merged: str, base: str, adapter: str, *, n: int, threads: int, rounds: int) -> dict:
    """Load time and prompt speed of ``base`` + ``adapter`` against ``merged``, alternated, best of ``rounds``."""
    runs: dict[str, list] = {"merged": [], "base_plus_adapter": []}
    for _ in range(rounds):
        for key, model, lora in (("base_plus_adapter", base, adapter), ("merged", merged, None)):
            r = run_child(RUNTIME.format(model=model, lora=lora, n=n, threads=threads))
            runs[key].append({**r["result"], "peak_rss_gb": r["peak_rss_gb"]})
    return {k: {"load_seconds": min(x["load_seconds"] for x in v),
                "prompt_tokens_per_s": max(x["prompt_tokens_per_s"] for x in v),
                "peak_rss_gb": max(x["peak_rss_gb"] for x in v), "runs": v} for k, v in runs.items()}


def bench_lora(args, work: Path, ckpt: Path, results: dict) -> None:
    cfg = dict(LLAMA31_8B, num_hidden_layers=args.layers)
    adapter = write_adapter(work / f"adapter-{args.layers}l", cfg)
    results["adapter_bytes"] = (adapter / "adapter_model.safetensors").stat().st_size
    print("convert to BF16 with the LoRA adapter merged ...", flush=True)
    results["convert_lora"] = run_child(CONVERT_LORA.format(src=str(ckpt), out=str(work / "gguf"), lora=str(adapter)))
    print(f"  {results['convert_lora']}", flush=True)
    base = results["convert"]["result"]["file"]
    merged = results["convert_lora"]["result"]["file"]
    print("convert-lora to a GGUF adapter ...", flush=True)
    results["convert_adapter"] = run_child(ADAPTER_GGUF.format(lora=str(adapter), base=base, out=str(work / "gguf")))
    print(f"  {results['convert_adapter']}", flush=True)
    gguf_adapter = results["convert_adapter"]["result"]["file"]
    pairs = [("BF16", merged, base)]
    if "quantize_q4_k_m" in results:
        print("quantize the merged file to Q4_K_M ...", flush=True)
        results["quantize_merged_q4_k_m"] = run_child(QUANTIZE.format(src=merged, out=str(work / "gguf"), threads=args.threads))
        pairs.append(("Q4_K_M", results["quantize_merged_q4_k_m"]["result"]["file"], results["quantize_q4_k_m"]["result"]["file"]))
    for kind, m, b in pairs:
        print(f"runtime, {kind}: base + adapter against merged ...", flush=True)
        results[f"runtime_{kind}"] = lora_runtime(str(m), str(b), gguf_adapter, n=args.prompt_tokens,
                                                  threads=args.runtime_threads, rounds=args.rounds)
        print(f"  {json.dumps({k: {x: y for x, y in v.items() if x != 'runs'} for k, v in results[f'runtime_{kind}'].items()})}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="Where the checkpoint and outputs go.")
    ap.add_argument("--layers", type=int, default=32, help="Transformer blocks (32 = the real 8B).")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="Quantizer threads (default: all).")
    ap.add_argument("--vocab-gguf", type=Path, default=ROOT.parent / "shared" / "fixtures" / "ggml-vocab-llama-bpe.gguf")
    ap.add_argument("--skip-quantize", action="store_true")
    ap.add_argument("--cleanup", action="store_true", help="Delete the checkpoint and outputs afterwards.")
    ap.add_argument("--lora", action="store_true", help="Also measure the LoRA paths (merged conversion, GGUF adapter, runtime).")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="Prompt length for the LoRA runtime figures.")
    ap.add_argument("--runtime-threads", type=int, default=2, help="llama.cpp threads for the LoRA runtime figures.")
    ap.add_argument("--rounds", type=int, default=2, help="Alternated rounds of the LoRA runtime figures.")
    args = ap.parse_args()

    work = args.workdir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"checkpoint-{args.layers}l"
    print(f"checkpoint: Llama-3.1-8B shape, {args.layers} layers, {args.shards} shards -> {ckpt}", flush=True)
    t0 = time.perf_counter()
    write_checkpoint(ckpt, args.layers, args.shards, args.vocab_gguf)
    gen_s = time.perf_counter() - t0
    shard_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))

    results = {"layers": args.layers, "shards": args.shards, "checkpoint_bytes": shard_bytes,
               "generate_seconds": round(gen_s, 1), "cpu_count": os.cpu_count()}
    copies = []
    for attempt in ("before", "after"):
        dst = work / "copy"
        if attempt == "after":
            print("convert to BF16 ...", flush=True)
            results["convert"] = run_child(CONVERT.format(src=str(ckpt), out=str(work / "gguf")))
            print(f"  {results['convert']}", flush=True)
        print(f"plain copy ({attempt}) ...", flush=True)
        copies.append(run_child(COPY.format(src=str(ckpt), dst=str(dst))))
        shutil.rmtree(dst, ignore_errors=True)
        print(f"  {copies[-1]}", flush=True)
    results["copy"] = copies
    copy_s = sum(c["seconds"] for c in copies) / len(copies)
    results["convert_vs_copy"] = round(results["convert"]["seconds"] / copy_s, 2)

    if not args.skip_quantize:
        print("quantize to Q4_K_M ...", flush=True)
        bf16 = results["convert"]["result"]["file"]
        results["quantize_q4_k_m"] = run_child(QUANTIZE.format(src=bf16, out=str(work / "gguf"), threads=args.threads))
        print(f"  {results['quantize_q4_k_m']}", flush=True)

    if args.lora:
        bench_lora(args, work, ckpt, results)

    (work / "bench.json").write_text(json.dumps(results, indent=2))
    c = results["convert"]
    print("\nsummary")
    print(f"  checkpoint        {shard_bytes / 1e9:.2f} GB in {args.shards} shards ({args.layers} layers)")
    print(f"  convert -> BF16   {c['seconds']:.1f} s, peak RSS {c['peak_rss_gb']:.2f} GB")
    print(f"  plain copy        {copy_s:.1f} s (mean of {len(copies)}) -> convert/copy = {results['convert_vs_copy']}x")
    if "quantize_q4_k_m" in results:
        qr = results["quantize_q4_k_m"]
        print(f"  quantize Q4_K_M   {qr['seconds']:.1f} s, {qr['result']['bytes'] / 1e9:.2f} GB, "
              f"{qr['result']['bits_per_weight']:.2f} bits/weight, peak RSS {qr['peak_rss_gb']:.2f} GB")
    if args.lora:
        cl = results["convert_lora"]
        print(f"  convert --lora    {cl['seconds']:.1f} s, peak RSS {cl['peak_rss_gb']:.2f} GB "
              f"(adapter {results['adapter_bytes'] / 1e6:.1f} MB of safetensors)")
        ca = results["convert_adapter"]
        print(f"  convert-lora      {ca['seconds']:.1f} s, GGUF adapter {ca['result']['bytes'] / 1e6:.1f} MB")
        for kind in ("BF16", "Q4_K_M"):
            if f"runtime_{kind}" in results:
                rt = results[f"runtime_{kind}"]
                for k in ("merged", "base_plus_adapter"):
                    print(f"  {kind:<6} {k:<17} load {rt[k]['load_seconds']:.2f} s, "
                          f"prompt {rt[k]['prompt_tokens_per_s']:.1f} tokens/s, peak RSS {rt[k]['peak_rss_gb']:.2f} GB")
    if args.cleanup:
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(work / "gguf", ignore_errors=True)


if __name__ == "__main__":
    main()
