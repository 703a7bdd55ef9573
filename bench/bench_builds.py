"""Prompt evaluation of one GGUF set under several llama-cpp-python builds, side by side.

Each build is a folder holding an unpacked llama-cpp-python wheel (``llama_cpp/``), put first
on ``PYTHONPATH`` of a child ``bench_prompt.py`` run; ``installed`` is the one in this
interpreter. Rounds alternate the builds (A, B, C, A, B, C, ...) so that drift in the
machine's speed hits each alike, and every (build, model, flash attention) row keeps its
best round. The last column is each row against the build named by ``--against``.

    python bench/bench_builds.py --build readme=/tmp/site-avx2 --build installed \\
        --build native=/tmp/site-native --against native --rounds 2 --flash-attn 0 1 \\
        -- /tmp/bench-shapes/1b-gguf/random-llama-1b-{Q4_0,Q4_K_M,Q8_0,BF16}.gguf

Prints a markdown table, and the JSON of every row with ``--out FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_build(site: str | None, models: list[str], flash_attn: list[int], threads: int, repeat: int) -> list[dict]:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join([site, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, str(ROOT / "bench" / "bench_prompt.py"), *models, "--threads", str(threads),
           "--repeat", str(repeat), "--flash-attn", *map(str, flash_attn), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT / "bench")
    if proc.returncode != 0:
        raise SystemExit(f"bench_prompt failed under {site or 'the installed build'}:\n{proc.stderr[-2000:]}")
    print(proc.stdout.rsplit("\n", 2)[0], flush=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", required=True,
                    help="NAME=FOLDER of an unpacked llama-cpp-python wheel, or 'installed'")
    ap.add_argument("--against", help="the build every row is compared with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="evaluations per setting within a round; the fastest counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    ap.add_argument("--out", type=Path)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args(argv)
    builds = dict(b.split("=", 1) if "=" in b else (b, None) for b in args.build)
    best: dict[tuple[str, str, int], dict] = {}
    for rnd in range(args.rounds):
        for name, site in builds.items():
            print(f"== round {rnd + 1}/{args.rounds}: {name}", flush=True)
            for row in run_build(site, args.models, args.flash_attn, args.threads, args.repeat):
                key = (name, row["model"], row["flash_attn"])
                if key not in best or row["tokens_per_s"] > best[key]["tokens_per_s"]:
                    best[key] = {**row, "build": name}
    from dear_local.env_report import cpu_model

    print(f"\nprompt tokens/s, {args.threads} threads, best of {args.rounds} rounds x {args.repeat}, {cpu_model()}\n")
    names = list(builds)
    head = "| model | flash attention | " + " | ".join(f"{n} ({best[next(k for k in best if k[0] == n)]['variant']})"
                                                     for n in names)
    print(head + (f" | each / {args.against} |" if args.against else " |"))
    print("|---" * (2 + len(names) + bool(args.against)) + "|")
    for model in dict.fromkeys(k[1] for k in best):
        for fa in args.flash_attn:
            vals = [best[(n, model, fa)]["tokens_per_s"] for n in names]
            line = f"| {model} | {'on' if fa else 'off'} | " + " | ".join(f"{v:.1f}" for v in vals)
            if args.against:
                ref = best[(args.against, model, fa)]["tokens_per_s"]
                line += " | " + " / ".join(f"{v / ref:.2f}" for v in vals)
            print(line + " |")
    if args.out:
        args.out.write_text(json.dumps(list(best.values()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
