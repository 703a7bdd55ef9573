"""``dear-local env``: the environment, for bug reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .options import CpuBuffersOption, cpu_buffers_value


def env(
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="Also load this model (a .gguf file or NAME[:QUANT]) and decode a few tokens, in a child process.",
    ),
    cpu_buffers: CpuBuffersOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of lines."),
) -> None:
    """Print versions, llama.cpp's CPU features, threads, DEAR_LOCAL_* settings and the CPU buffer mode.

    Paste the output into bug reports. With --model, the file is first checked to be a
    whole GGUF (a truncated or corrupt file is reported as such); a native crash while
    loading or decoding is caught in the child process and reported with the setting to try.
    """
    from ..backends.cpu_variant import check_variant_setting
    from ..backends.loader import choose_cpu_buffers
    from ..env_report import collect, format_report
    from ..errors import InvalidModelFileError, NativeCrashError

    if model is not None:  # the probe would run under it: say a bad one first (the report alone shows it)
        check_variant_setting()
    report = collect()
    probe = None
    if model is not None:
        from ..backends.probe import probe_model
        from ..gguf_file import check_gguf
        from ..store import resolve

        # A folder or a damaged file is reported as such, not as a crash to work around with --cpu-buffers.
        path = Path(model).expanduser()
        path = path if path.exists() else resolve(model).path
        check_gguf(path)
        probe = probe_model(path, cpu_buffers_value(cpu_buffers))
        report["model probe"] = {
            "model": str(path), "cpu buffers": probe.cpu_buffers, "ok": probe.ok,
            "result": f"decoded {probe.detail!r}" if probe.ok else probe.detail,
            "seconds": round(probe.seconds, 2),
        }
    # ensure_ascii escapes every control character but DEL
    typer.echo(json.dumps(report, indent=2).replace("\x7f", "\\u007f") if as_json else format_report(report))
    if probe is not None and probe.refused is not None:
        raise InvalidModelFileError(probe.refused)  # the child's own one-line reason, naming the file and the fix
    if probe is not None and not probe.ok:
        used = choose_cpu_buffers(probe.cpu_buffers).mode
        other = "plain" if used == "extra" else "extra"
        raise NativeCrashError(
            f"loading or decoding {model} failed with CPU buffers '{used}' ({probe.detail}); "
            f"try --cpu-buffers {other} (or DEAR_LOCAL_CPU_BUFFERS={other}), and include this output in a bug report"
        )


def register(app: typer.Typer) -> None:
    app.command()(env)
