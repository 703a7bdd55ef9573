"""What ``dear-local env`` prints: versions, CPU features, threads, settings and the loader's choice.

Like ``transformers env``: one paste that a bug report can carry. Nothing here
loads a model; ``dear-local env --model`` adds a probe run in a child process
(:mod:`dear_local.backends.probe`).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

OPTIONAL_PACKAGES = ("torch", "transformers", "gguf", "safetensors", "fastapi", "uvicorn", "typer", "click", "numpy")


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def collect() -> dict:
    """Everything ``dear-local env`` reports, as a JSON-ready dict."""
    from . import __version__
    from .backends.loader import choose_cpu_buffers, cpu_features, llama_system_info
    from .errors import DearLocalError, UserInputError
    from .redact import redact_settings
    from .settings import get_settings

    from .backends.cpu_variant import ensure_cpu_backend

    try:
        backend = ensure_cpu_backend()
        cpu_backend = {"variant": backend.label, "reason": backend.reason}
        if backend.scores:
            cpu_backend["scores on this CPU"] = " ".join(f"{k}={v}" for k, v in backend.scores.items())
    except DearLocalError as exc:  # a bad DEAR_LOCAL_CPU_VARIANT, a variant llama.cpp refused: reported, the rest still printed
        cpu_backend = {"variant": None, "reason": str(exc)}
    try:
        info = llama_system_info()
    except UserInputError:
        info = ""
    try:
        choice = choose_cpu_buffers(info=info)
        buffers = {"mode": choice.mode, "requested": choice.requested, "reason": choice.reason}
    except UserInputError as exc:
        buffers = {"mode": None, "requested": get_settings().cpu_buffers, "reason": str(exc)}
    cores = os.cpu_count() or 1
    return {
        "dear-local": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "llama-cpp-python": _version("llama-cpp-python"),
        "cpu backend": cpu_backend,
        "llama.cpp system info": info.strip(),
        "llama.cpp CPU features": sorted(k for k, v in cpu_features(info).items() if v == "1"),
        "packages": {name: _version(name) for name in OPTIONAL_PACKAGES},
        "threads": {
            "logical cores": cores,
            "llama.cpp default (decode / prompt)": f"{max(cores // 2, 1)} / {cores}",
        },
        # secret-like settings (API keys, tokens, passwords) as "*** (set)", URL credentials masked
        "settings": redact_settings({k: v for k, v in sorted(os.environ.items()) if k.startswith("DEAR_LOCAL_")}),
        "cpu buffers": buffers,
    }


def format_report(report: dict) -> str:
    """The report as ``key: value`` lines, nested dicts indented. Every key and value is shown through
    :func:`~dear_local.terminal.printable` (settings, paths and reasons can hold control characters)."""
    from .terminal import printable

    def show(value) -> str:
        return printable(str(value))

    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{show(key)}:" + ("" if value else " (none)"))
            lines.extend(f"  {show(k)}: {show(v)}" for k, v in value.items())
        elif isinstance(value, list):
            lines.append(f"{show(key)}: {show(' '.join(map(str, value))) or '(none)'}")
        else:
            lines.append(f"{show(key)}: {show(value)}")
    return "\n".join(lines)
