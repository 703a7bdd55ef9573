"""Commands other packages add to ``dear-local``: the ``dear_local.commands`` entry points.

A package adds commands by declaring a registrar in its ``pyproject.toml``::

    [project.entry-points."dear_local.commands"]
    name = "package.module:register"    # register(app: typer.Typer) -> None

dear-local's own workstation commands (convert, quantize, build, imatrix, reference, check, demo)
come this way from ``dear_local_convert``, so the runtime imports nothing of the workstation side.

Registrars are read from the installed distributions' metadata
(:func:`importlib.metadata.entry_points`). When ``dear_local`` runs from a source checkout (an
editable install, or ``PYTHONPATH`` on the tree, as the tests run), the checkout's own
``pyproject.toml`` declares dear-local's registrars instead of the installed ``dear-local``
metadata, which pip wrote at install time, perhaps from another checkout or an older revision.

A registrar whose package is not installed is skipped; each workstation command left without one
still answers, with one line naming the ``pip install`` it needs (:data:`WORKSTATION_COMMANDS`).
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import typer

from ..errors import MissingExtraError

GROUP = "dear_local.commands"
PROJECT = "dear-local"

# The commands dear_local_convert registers, and the extra each needs: named here only to say what
# to install when that package is missing.
WORKSTATION_COMMANDS: dict[str, str] = {
    "convert": "convert",
    "convert-lora": "convert",
    "quantize": "convert",
    "build": "convert",
    "imatrix": "convert",
    "reference": "convert",
    "check": "check",
    "demo": "convert",
}


def checkout_pyproject() -> Path | None:
    """The ``pyproject.toml`` beside the ``dear_local`` package being run, or None (an installed wheel)."""
    path = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return path if path.is_file() else None


def declared_registrars(pyproject: Path) -> list[EntryPoint] | None:
    """The :data:`GROUP` entry points ``pyproject`` declares, in its order.

    Returns None when the file is not dear-local's (another project's, or unreadable), so the
    installed metadata is used instead.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project") or {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(project, dict) or project.get("name") != PROJECT:
        return None
    table = (project.get("entry-points") or {}).get(GROUP) or {}
    return [EntryPoint(name=name, value=value, group=GROUP) for name, value in table.items()]


def _from_dear_local(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and re.sub(r"[-_.]+", "-", dist.name or "").lower() == PROJECT


def registrars() -> list[EntryPoint]:
    """Every :data:`GROUP` entry point: dear-local's own first (from the checkout's
    ``pyproject.toml`` when running from one), then other distributions'."""
    installed = list(entry_points(group=GROUP))
    pyproject = checkout_pyproject()
    own = declared_registrars(pyproject) if pyproject is not None else None
    if own is None:
        return installed
    return own + [ep for ep in installed if not _from_dear_local(ep)]


def _not_installed(exc: ModuleNotFoundError, module: str) -> bool:
    """Whether ``exc`` says ``module`` or a package above it is missing (not something it imports)."""
    parts = module.split(".")
    return exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def command_name(info) -> str:
    """The name typer gives a registered command (``info``, one of ``app.registered_commands``):
    its own, or its function's with ``_`` as ``-``."""
    from typer.main import get_command_name

    return info.name or get_command_name(info.callback.__name__)


def command_names(app: typer.Typer) -> set[str]:
    """The names of the commands registered on ``app``."""
    return {command_name(info) for info in app.registered_commands}


def _add_missing(app: typer.Typer, name: str, extra: str) -> None:
    """A hidden ``name`` command that accepts any arguments and says what to install."""

    def missing(ctx: typer.Context) -> None:
        raise MissingExtraError(
            f"'dear-local {name}' needs the '{extra}' extra (the workstation package dear_local_convert is not "
            f"installed): pip install \"dear-local[{extra}]\""
        )

    missing.__doc__ = f"Not installed: needs the '{extra}' extra."
    app.command(name, hidden=True, add_help_option=False,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True})(missing)


def register_plugins(app: typer.Typer) -> list[str]:
    """Run every registrar on ``app``; returns the names of the registrars skipped as not installed.

    A workstation command that no registrar added gets a hidden stand-in that fails with
    :class:`~dear_local.errors.MissingExtraError` (exit 2) naming the extra to install.

    Raises:
        Whatever importing or running a registrar raises, except the :class:`ModuleNotFoundError`
        of a registrar whose own module is missing.
    """
    skipped = []
    for ep in registrars():
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if not _not_installed(exc, ep.module):
                raise
            skipped.append(ep.name)
            continue
        register(app)
    present = command_names(app)
    for name, extra in WORKSTATION_COMMANDS.items():
        if name not in present:
            _add_missing(app, name, extra)
    return skipped
