"""DeAR's dual stage on real shapes: pointwise scoring speed, and the pipeline against listwise alone.

Speed depends on the shape, the quant type and the token counts, not on the weights, so this
builds random-weight pointwise rankers with the exact configs of Llama-3.2-3B (DeAR-P-3B) and
Llama-3.1-8B (DeAR-P-8B): a random causal checkpoint (bench_shapes' writer, the real Llama-3
tokenizer), then a ``LlamaForSequenceClassification`` view of it (its shards linked, a config
with one label, a random ``score`` head in a shard of its own), converted by ``dear-local
convert`` and quantized. The 8B listwise GGUF is bench_shapes' (``--shape 8b --types Q4_K_M``,
same ``--workdir``). Every artifact is cached; ``--drop-bf16`` deletes a BF16 GGUF once its
quant exists, to save disk.

Candidates are DL19 query 0's BM25 top-100 (the ``dl19-top100`` slice). Each path runs in a fresh
child process (peak RSS is the child's VmHWM):

  points   dear-local's pointwise scoring (``PointwiseModel``, flash attention on) of the first
           ``--docs`` candidates, at each ``--batches`` size (documents per llama.cpp call):
           documents/s, tokens/s, peak RSS;
  card     the model card's path (``simple_rerank.py``): the checkpoint in transformers bf16,
           ``tokenizer(queries, documents, truncation=True, max_length=228, padding=True)``,
           ``--card-batch`` pairs per forward; the same candidates (``--card-docs`` of them,
           fewer on the 8B shape, where transformers is slow). The same input ids are checked.
  pipeline ``Reranker(L-8B, first_stage=P-3B, listwise_depth=30)`` over all 100 (DeAR's
           ``--rank_end 30 --window_size 20 --step 10``: 2 windows) against ``Reranker(L-8B)``
           alone over 100 (9 windows): seconds per query and peak RSS.

    DEAR_LOCAL_DATA=../shared/data python bench/bench_pointwise.py --workdir /work/bench-shapes --threads 2 --drop-bf16 \\
        --shapes 3b 8b --batches 1 8 32 --docs 32 --card-docs 32 16 --pipeline

``--laptop`` limits both paths to AVX2 (torch's and oneDNN's kernels, llama.cpp's haswell variant), as on
a laptop. Results go to ``<workdir>/pointwise.json`` (``pointwise-laptop.json``) and are printed as
markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_convert import LLAMA31_8B
from bench_shapes import LLAMA32_3B, VOCAB_GGUF, child_convert, child_quantize, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {"3b": (LLAMA32_3B, 2), "8b": (LLAMA31_8B, 4)}  # config, safetensors shards
QTYPE = "Q4_K_M"


# -- building (cached) ---------------------------------------------------------------------------


def pointwise_view(causal: Path, out: Path, seed: int = 0) -> Path:
    """A LlamaForSequenceClassification checkpoint sharing ``causal``'s shards, plus a random head."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from dear_local_convert.standins.tiny_llama3 import write_llama3_tokenizer

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((causal / "config.json").read_text())
    index = json.loads((causal / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        (out / shard).unlink(missing_ok=True)
        (out / shard).symlink_to(causal / shard)
    rng = np.random.default_rng(seed)
    head = torch.from_numpy(rng.normal(0, cfg["hidden_size"] ** -0.5, (1, cfg["hidden_size"])).astype(np.float32))
    save_file({"score.weight": head.to(torch.bfloat16)}, out / "score.safetensors", metadata={"format": "pt"})
    index["weight_map"]["score.weight"] = "score.safetensors"
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    write_llama3_tokenizer(VOCAB_GGUF, out)  # the real pair template: <|begin_of_text|> before each segment
    pcfg = {**cfg, "architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"},
            "label2id": {"LABEL_0": 0}, "pad_token_id": 128009}
    (out / "config.json").write_text(json.dumps(pcfg, indent=1))
    return out


def build(shape: str, work: Path, threads: int, drop_bf16: bool, log: dict) -> tuple[Path, Path]:
    """(pointwise checkpoint, pointwise Q4_K_M GGUF) for ``shape``; whatever exists is reused."""
    cfg, shards = SHAPES[shape]
    causal = work / f"{shape}-checkpoint"
    if not (causal / "config.json").is_file():
        print(f"[{shape}] writing the random checkpoint -> {causal}", flush=True)
        t = time.perf_counter()
        write_checkpoint(causal, cfg, shards, VOCAB_GGUF)
        log[f"{shape}/checkpoint_s"] = round(time.perf_counter() - t, 1)
    ckpt = pointwise_view(causal, work / f"{shape}-pointwise-checkpoint")
    gdir = work / f"{shape}-pointwise-gguf"
    name = f"random-dear-p-{shape}"
    bf16, quant = gdir / f"{name}-BF16.gguf", gdir / f"{name}-{QTYPE}.gguf"
    if not quant.is_file():
        if not bf16.is_file():
            print(f"[{shape}] converting the pointwise ranker to BF16 ...", flush=True)
            log[f"{shape}/convert"] = child("convert", src=str(ckpt), out=str(gdir), name=name)
        print(f"[{shape}] quantizing to {QTYPE} ...", flush=True)
        log[f"{shape}/quantize"] = child("quantize", src=str(bf16), out=str(gdir), qtype=QTYPE, threads=threads)
    if drop_bf16 and bf16.is_file() and quant.is_file():
        bf16.unlink()
    return ckpt, quant


# -- children: every measured path runs in a fresh process ------------------------------------------


# --laptop: the same CPU limited to AVX2 (bench_shapes' LAPTOP_ENV): torch's and oneDNN's kernels capped at
# AVX2, llama.cpp's haswell variant.
LAPTOP_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DEAR_LOCAL_CPU_VARIANT": "haswell"}
CHILD_ENV: dict = {}


def child(kind: str, **kw) -> dict:
    """Run ``kind`` in a fresh process of this script; its wall time, CPU seconds, peak RSS and result."""
    env = {**os.environ, "DEAR_LOCAL_NO_PROGRESS": "1", **CHILD_ENV}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(kw)], stdout=subprocess.PIPE,
                          cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed ({proc.returncode}): {kw}")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {"seconds": round(wall, 2), "cpu_seconds": round(out.pop("cpu_seconds"), 2),
            "peak_rss_gb": round(out.pop("vmhwm_kb") * 1024 / 1e9, 3), "load_avg": round(os.getloadavg()[0], 2),
            "result": out}


def _candidates(n: int | None = None) -> tuple[str, list[str]]:
    from dear_local_convert.slices import load_slice

    q = load_slice("dl19-top100", queries=1).queries[0]
    return q.text, list(q.passages[:n] if n else q.passages)


def child_points(gguf: str, docs: int, batch: int, threads: int) -> dict:
    from dear_local.backends.pointwise import PointwiseModel

    query, texts = _candidates(docs)
    t = time.perf_counter()
    with PointwiseModel(gguf, batch=batch, n_threads=threads, flash_attn=True) as pm:
        load = time.perf_counter() - t
        ids = [pm.pair_ids(query, d) for d in texts]
        t = time.perf_counter()
        scores = pm.score_ids(ids)
        seconds = time.perf_counter() - t
    return {"load": load, "score_s": seconds, "docs": len(ids), "tokens": sum(map(len, ids)),
            "ids": ids, "scores": [float(s) for s in scores]}


def child_card(checkpoint: str, docs: int, batch: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dear_local.contract.pointwise import get_pointwise_template

    torch.set_num_threads(threads)
    tmpl = get_pointwise_template("dear-p")
    query, texts = _candidates(docs)
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.bfloat16, num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id
    load = time.perf_counter() - t
    pairs = [tmpl.texts(query, d) for d in texts]
    ids, scores = [], []
    t = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            enc = tok([a for a, _ in chunk], [b for _, b in chunk], truncation=True, max_length=tmpl.max_length,
                      padding=True, return_tensors="pt")
            scores += model(**enc).logits[:, 0].float().tolist()
            ids += [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    seconds = time.perf_counter() - t
    return {"load": load, "score_s": seconds, "docs": len(ids), "tokens": sum(map(len, ids)), "ids": ids,
            "scores": scores, "torch_threads": torch.get_num_threads()}


def child_pipeline(listwise: str, first_stage: str | None, threads: int, depth: int) -> dict:
    from dear_local.reranker import Reranker

    query, texts = _candidates()
    t = time.perf_counter()
    with Reranker(listwise, first_stage=first_stage, listwise_depth=depth, n_threads=threads) as r:
        load = time.perf_counter() - t
        t = time.perf_counter()
        resp = r.rerank(query, texts)
        seconds = time.perf_counter() - t
    windows_s = sum(w.prompt_seconds + w.decode_seconds for w in resp.windows)
    return {"load": load, "rerank_s": seconds, "windows": len(resp.windows), "windows_s": windows_s,
            "first_stage_s": seconds - windows_s if first_stage else 0.0,
            "order": [x.index for x in resp.results], "score_kind": resp.ranking.score_kind}


CHILDREN = {"convert": child_convert, "quantize": child_quantize, "points": child_points, "card": child_card,
            "pipeline": child_pipeline}


def run_child(kind: str, kw: dict) -> None:
    result = CHILDREN[kind](**kw)
    with open("/proc/self/status") as f:
        result["vmhwm_kb"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    t = os.times()
    result["cpu_seconds"] = t.user + t.system
    print(json.dumps(result), flush=True)


# -- the driver ------------------------------------------------------------------------------------


def rate(r: dict) -> tuple[float, float]:
    res = r["result"]
    return res["docs"] / res["score_s"], res["tokens"] / res["score_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-shapes"))
    ap.add_argument("--shapes", nargs="+", default=["3b", "8b"], choices=sorted(SHAPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32], help="documents per llama.cpp call")
    ap.add_argument("--docs", type=int, default=32, help="candidates scored by dear-local, per batch size")
    ap.add_argument("--card-docs", nargs="+", type=int, default=[32, 16],
                    help="candidates scored by transformers bf16, per shape (in --shapes order); 0 skips it")
    ap.add_argument("--card-batch", type=int, default=8, help="pairs per transformers forward (padded right)")
    ap.add_argument("--pipeline", action="store_true", help="also time P-3B top-100 -> L-8B top-30 against L-8B alone")
    ap.add_argument("--depth", type=int, default=30, help="the pipeline's listwise depth")
    ap.add_argument("--drop-bf16", action="store_true", help="delete each BF16 GGUF once its quant exists")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--laptop", action="store_true", help="limit both paths to AVX2, as on a laptop without AVX-512")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return run_child(args.child[0], json.loads(args.child[1]))

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    out_path = work / ("pointwise-laptop.json" if args.laptop else "pointwise.json")
    if args.laptop:
        CHILD_ENV.update(LAPTOP_ENV)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    results["threads"] = args.threads
    log = results.setdefault("build", {})
    built = {s: build(s, work, args.threads, args.drop_bf16, log) for s in args.shapes}

    def save():
        from dear_local.fileio import write_text_atomic

        write_text_atomic(out_path, json.dumps(results, indent=1))

    save()
    if args.build_only:
        return
    for shape, card_docs in zip(args.shapes, args.card_docs + [0] * len(args.shapes)):
        ckpt, gguf = built[shape]
        rows = results.setdefault(shape, {})
        for b in args.batches:
            print(f"[{shape}] dear-local {QTYPE}, batch {b} ...", flush=True)
            rows[f"points_b{b}"] = child("points", gguf=str(gguf), docs=args.docs, batch=b, threads=args.threads)
            save()
        if card_docs:
            print(f"[{shape}] transformers bf16, batch {args.card_batch}, {card_docs} docs ...", flush=True)
            rows["card"] = child("card", checkpoint=str(ckpt), docs=card_docs, batch=args.card_batch, threads=args.threads)
            ours = rows[f"points_b{args.batches[0]}"]["result"]["ids"]
            rows["card"]["same_ids"] = rows["card"]["result"]["ids"] == ours[:card_docs]
            save()
    if args.pipeline:
        listwise = work / "8b-gguf" / f"random-llama-8b-{QTYPE}.gguf"
        if not listwise.is_file():
            raise SystemExit(f"{listwise} is missing: run bench_shapes.py --shape 8b --types {QTYPE} first")
        first = built.get("3b", (None, None))[1] or build("3b", work, args.threads, args.drop_bf16, log)[1]
        pipe = results.setdefault("pipeline", {})
        print("[pipeline] P-3B top-100 -> L-8B top-30 ...", flush=True)
        pipe["dual"] = child("pipeline", listwise=str(listwise), first_stage=str(first), threads=args.threads,
                             depth=args.depth)
        save()
        print("[pipeline] L-8B alone over 100 ...", flush=True)
        pipe["listwise"] = child("pipeline", listwise=str(listwise), first_stage=None, threads=args.threads,
                                 depth=args.depth)
        save()
    print_tables(results)


def print_tables(results: dict) -> None:
    print(f"\nCPU: {results['cpu']}, {results['threads']} threads\n")
    print("| shape | path | docs | tokens | documents/s | tokens/s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for shape in ("3b", "8b"):
        for key, r in sorted(results.get(shape, {}).items()):
            if not isinstance(r, dict) or "result" not in r:
                continue
            docs_s, tok_s = rate(r)
            label = f"dear-local {QTYPE}, batch {key.removeprefix('points_b')}" if key.startswith("points") \
                else "transformers bf16 (card path)" + ("" if r.get("same_ids", True) else " [ids differ]")
            print(f"| {shape} | {label} | {r['result']['docs']} | {r['result']['tokens']} | {docs_s:.2f} | "
                  f"{tok_s:.1f} | {r['peak_rss_gb']} |")
    pipe = results.get("pipeline")
    if pipe:
        print("\n| run | windows | load s | first stage s | windows s | rerank s per query | peak RSS GB |")
        print("|---|---|---|---|---|---|---|")
        for key, label in (("dual", "P-3B top-100 -> L-8B top-30"), ("listwise", "L-8B alone over 100")):
            if key in pipe:
                r = pipe[key]["result"]
                print(f"| {label} | {r['windows']} | {r['load']:.1f} | {r.get('first_stage_s', 0):.1f} | "
                      f"{r.get('windows_s', 0):.1f} | {r['rerank_s']:.1f} | {pipe[key]['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
