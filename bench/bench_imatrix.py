"""With and without a ranking-calibrated importance matrix: the low-bit quants of the stand-in, checked.

    python bench/bench_imatrix.py --workdir /tmp/bench-imatrix
    python bench/bench_imatrix.py --workdir /tmp/bench-imatrix --reference ref.jsonl   # reuse a reference

The whole experiment, on the SmolLM2 stand-in (or --checkpoint DIR):

1. the bf16 HF checkpoint -> ``<name>-BF16.gguf`` (the real converter);
2. an importance matrix collected in transformers while the model ranks a cut of
   DL19 (``dl19-top20``) under the model's profile; NovelEval, the evaluation
   slice, is checked to share no query with it;
3. each type quantized twice, without and with the matrix (types that need a
   matrix, IQ3_M and IQ2_M, are confirmed to be refused without one);
4. a reference on NovelEval (transformers, CPU), unless --reference is given;
5. ``dear_local_convert.agreement.check.check`` of every quant against it;
6. a markdown table: type, size, mean Kendall tau and exact match without and
   with, plus first-token KL. Also written to ``<workdir>/bench_imatrix.md``
   and ``.json``.

Every step's output is kept in the workdir and reused on the next run
(``--force`` rebuilds). The reference and the matrix are computed in fp32 by
default: on a CPU without bf16 matrix units bf16 is several times slower, and
the stand-in's weights are bf16 values, so fp32 is the exact full-precision run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STANDIN = "smollm2-135m-instruct"
TYPES = ("IQ4_XS", "Q3_K_M", "Q2_K", "IQ3_M", "IQ2_M")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quantize_both(bf16: Path, types: list[str], work: Path, imx: Path, name: str, threads, force: bool):
    """Each type without and with the matrix: ``({(type, variant): path or None}, {type: refusal})``."""
    from dear_local.errors import UserInputError
    from dear_local_convert.quant.quantize import NEEDS_IMATRIX, quantize

    paths: dict[tuple[str, str], Path | None] = {}
    refusals: dict[str, str] = {}
    for t in types:
        for variant, matrix in (("without", None), ("with", imx)):
            out_dir = work / ("without" if matrix is None else f"with-{imx.stem}")  # one dir per matrix
            dest = out_dir / f"{name}-{t}.gguf"
            if variant == "without" and t in NEEDS_IMATRIX:
                try:
                    quantize(bf16, [t], out_dir, threads=threads, force=True)
                except UserInputError as exc:
                    refusals[t] = str(exc)
                    paths[(t, variant)] = None
                    continue
                raise SystemExit(f"{t} was quantized without a matrix; it should have been refused")
            if force or not dest.is_file():
                quantize(bf16, [t], out_dir, threads=threads, force=True, imatrix=matrix)
            paths[(t, variant)] = dest
    return paths, refusals


def write_results(work: Path, types, paths, refusals, report, calibration, timings, argv) -> dict:
    """The with/without table (printed and written as .md) and every figure as JSON."""
    rows = {Path(r.path).resolve(): r for r in report["rows"]}

    def cell(t: str, variant: str) -> dict | None:
        p = paths.get((t, variant))
        return rows.get(p.resolve()) if p is not None else None

    results = []
    for t in types:
        without, with_ = cell(t, "without"), cell(t, "with")
        results.append({"type": t, "without": _pick(without), "with": _pick(with_), "refused_without": t in refusals})
    table = markdown(results, report, calibration)
    print(table)
    out = {
        "command": " ".join(["python", "bench/bench_imatrix.py", *(argv if argv is not None else sys.argv[1:])]),
        "calibration": {k: v for k, v in calibration.items() if k != "query_sha256"},
        "reference": report["reference"],
        "reference_row": _pick(report["reference_row"]),
        "results": results,
        "refusals": refusals,
        "timings_s": timings,
    }
    (work / "bench_imatrix.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (work / "bench_imatrix.md").write_text(table + "\n", encoding="utf-8")
    say(f"written: {work / 'bench_imatrix.md'}, {work / 'bench_imatrix.json'}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, help="HF checkpoint dir (default: the SmolLM2 stand-in)")
    ap.add_argument("--model", default=STANDIN, help="manifest whose profile is used (default: the stand-in's)")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--calib-slice", default="dl19-top20")
    ap.add_argument("--calib-queries", type=int, default=16)
    ap.add_argument("--calib-passages", type=int, default=10)
    ap.add_argument("--eval-queries", type=int, default=21)
    ap.add_argument("--eval-passages", type=int, default=10)
    ap.add_argument("--dtype", default="fp32", help="transformers dtype for the matrix and the reference")
    ap.add_argument("--reference", type=Path, help="reuse this NovelEval reference instead of recording one")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--force", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    from dear_local_convert.agreement.check import check
    from dear_local_convert.to_gguf.writer import convert_checkpoint, output_path
    from dear_local_convert.quant.imatrix import check_disjoint, make_imatrix
    from dear_local_convert.quant.imatrix_file import read_imatrix
    from dear_local_convert.quant.quantize import parse_types
    from dear_local_convert.reference import write_reference
    from dear_local_convert.slices import load_slice
    from dear_local.store import get_manifest

    work = args.workdir.expanduser()
    work.mkdir(parents=True, exist_ok=True)
    m = get_manifest(args.model)
    profile = m.profile
    types = parse_types(args.types)
    timings: dict[str, float] = {}

    def timed(step: str, t0: float) -> None:
        timings[step] = round(time.perf_counter() - t0, 1)
        say(f"      {step}: {timings[step]} s")

    # 1. checkpoint -> BF16 GGUF
    if args.checkpoint:
        ckpt = args.checkpoint
    else:
        from dear_local_convert.standins.smollm2 import standin_checkpoint

        ckpt = standin_checkpoint()
    bf16 = output_path(work, m.name, "bf16")
    t0 = time.perf_counter()
    if args.force or not bf16.is_file():
        say(f"[1/5] converting {ckpt} -> {bf16.name}")
        convert_checkpoint(ckpt, work, "bf16", force=True, name=m.name, source_repo=m.hf_repo, revision="standin")
    timed("convert", t0)

    # 2. the matrix, calibrated on DL19, never on NovelEval
    eval_slice = load_slice("noveleval", queries=args.eval_queries, passages=args.eval_passages)
    imx = work / f"imatrix-{args.calib_slice}-{args.calib_queries}x{args.calib_passages}-{args.dtype}.gguf"
    t0 = time.perf_counter()
    if args.force or not imx.is_file():
        say(f"[2/5] collecting the importance matrix on {args.calib_slice} "
            f"({args.calib_queries} queries x {args.calib_passages} passages, {profile.template}/{profile.decoding})")
        make_imatrix(
            ckpt, imx, profile, slice_name=args.calib_slice, queries=args.calib_queries,
            passages=args.calib_passages, eval_slice_name="noveleval", device="cpu", dtype=args.dtype,
            model={"name": m.name, "repo": m.hf_repo}, force=True,
            on_query=lambda n: say(f"      calibration query: {n} tokens"),
        )
    timed("imatrix", t0)
    calibration = read_imatrix(imx).calibration
    check_disjoint(calibration, load_slice("noveleval"))

    # 3. quantize each type without and with the matrix
    t0 = time.perf_counter()
    say(f"[3/5] quantizing {', '.join(types)} without and with the matrix")
    paths, refusals = quantize_both(bf16, types, work, imx, m.name, args.threads, args.force)
    timed("quantize", t0)

    # 4. the reference on NovelEval
    t0 = time.perf_counter()
    ref = args.reference or work / f"reference-noveleval-{args.eval_queries}x{args.eval_passages}-{args.dtype}.jsonl"
    if not args.reference and (args.force or not ref.is_file()):
        say(f"[4/5] recording the reference on noveleval ({args.eval_queries} x {args.eval_passages}, "
            f"transformers {args.dtype}, CPU)")
        write_reference(ckpt, eval_slice, profile, ref, device="cpu", dtype=args.dtype, model_name=m.name,
                        source_repo=m.hf_repo, force=True)
    timed("reference", t0)

    # 5. check everything against it
    t0 = time.perf_counter()
    ggufs = [p for p in paths.values() if p is not None]
    say(f"[5/5] checking {len(ggufs)} quants against {ref.name}")
    report = check(ref, ggufs, gates={}, n_threads=args.threads,
                   on_quant=lambda r: say(f"      {r.path}: tau {r.mean_tau:.3f}"))
    timed("check", t0)
    return write_results(work, types, paths, refusals, report, calibration, timings, argv)


KEEP = ("bytes", "bits_per_weight", "mean_tau", "min_tau", "exact_match_pct", "top1_pct", "first_token_kl",
        "first_token_top1_pct", "ndcg", "delta_ndcg10", "status_counts")


def _pick(row) -> dict | None:
    """The figures of a check's row (a CheckRow) this benchmark keeps, or None for no row."""
    return None if row is None else {k: getattr(row, k) for k in KEEP}


def markdown(results: list[dict], report: dict, calibration: dict) -> str:
    ref = report["reference"]
    s = ref["slice"]
    lines = [
        f"Evaluation: {s['name']} {s['queries']} queries x {s['passages']} passages, reference "
        f"transformers {ref['dtype']} ({ref['device_name']}), profile {ref['profile']['template']}/"
        f"{ref['profile']['decoding']}.",
        f"Matrix: calibrated on {calibration['slice']} {calibration['queries']} queries x "
        f"{calibration['passages']} passages ({calibration['tokens']} tokens, {calibration['windows']} windows).",
        "",
        "| type | size MB without | size MB with | mean τ without | mean τ with | exact match without "
        "| exact match with | first-token KL without | first-token KL with |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    na = "n/a (needs imatrix)"

    def fmt(row, key, spec, missing):
        if row is None:
            return missing
        v = row[key] / 1e6 if key == "bytes" else row[key]
        return format(v, spec) + ("%" if key == "exact_match_pct" else "")

    for r in results:
        w, i = r["without"], r["with"]
        cells = [r["type"], fmt(w, "bytes", ".1f", na), fmt(i, "bytes", ".1f", "-")]
        for key, spec in (("mean_tau", ".3f"), ("exact_match_pct", ".1f"), ("first_token_kl", ".4f")):
            cells += [fmt(w, key, spec, na), fmt(i, key, spec, "-")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
