"""`dear-local demo`: the whole pipeline on the stand-in, offline after install.

It builds the stand-in's quant ladder from its bf16 checkpoint, records the
reference on the CPU over a small NovelEval slice, checks every quant against it
and prints the report table and the plot's path. Everything is cached under
``DEAR_LOCAL_HOME``, so a second run only re-checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

STANDIN = "smollm2-135m-instruct"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _reference_is_current(path: Path, eval_slice, profile) -> bool:
    from dear_local.errors import DearLocalError

    from dear_local_convert.reference import read_reference

    if not path.is_file():
        return False
    try:
        header, _ = read_reference(path)
    except DearLocalError:
        return False
    return header["slice"]["sha256"] == eval_slice.sha256 and header["profile"] == profile.to_dict()


def run_demo(*, queries: int = 5, passages: int = 10, force: bool = False, threads: int | None = None) -> dict:
    from dear_local_convert.agreement.check import gate_failure, run_check
    from dear_local_convert.agreement.report import summary
    from dear_local.store import get_manifest

    from dear_local_convert.build import build
    from dear_local_convert.reference import write_reference
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.smollm2 import standin_checkpoint

    m = get_manifest(STANDIN)
    _say(f"[1/3] building the {m.name} ladder ({', '.join(m.ladder)}) from its bf16 checkpoint")
    result = build(m.name, force=force, threads=threads, log=lambda s: _say("      " + s))
    _say(result.table())

    eval_slice = load_slice("noveleval", queries=queries, passages=passages)
    out_dir = m.dir / "demo"
    ref = out_dir / f"reference-noveleval-{queries}x{passages}.jsonl"
    if force or not _reference_is_current(ref, eval_slice, m.profile):
        # fp32 compute of the bf16 weights: exact upcast, and several times faster than
        # bf16 matmuls on CPUs without native bf16 support (as on these 2-core machines).
        _say(f"[2/3] recording the reference: transformers on the CPU (bf16 weights, fp32 compute), "
             f"{queries} queries x {passages} passages")
        write_reference(
            standin_checkpoint(), eval_slice, m.profile, ref, device="cpu", dtype="fp32",
            model_name=m.name, source_repo=m.hf_repo, force=True,
        )
    else:
        _say(f"[2/3] reusing the reference {ref}")
    _say(f"[3/3] checking {len(m.ladder)} quants against it")
    ggufs = [m.gguf_path(t) for t in m.ladder]
    report, paths = run_check(ref, ggufs, out_dir / "report", n_threads=threads, force=True)  # the demo's own report
    print(summary(report, paths), flush=True)
    failure = gate_failure(report, paths)
    if failure is not None:
        raise failure
    return report
