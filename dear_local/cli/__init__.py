"""The ``dear-local`` command: a small typer app over the library functions.

Each command group lives in its own module and registers itself on ``app``.
Expected failures (``DearLocalError``) print one line and exit 2; set
``DEAR_LOCAL_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import DearLocalError
from ..settings import get_settings
from .messages import safe

app = typer.Typer(
    name="dear-local",
    help="Run the DeAR listwise reranker locally through llama.cpp, and check quantized models "
    "against the full-precision reference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from . import env, runtime

    runtime.register(app)
    env.register(app)
    for name in ("evaluate", "convert", "check", "serve", "imatrix"):
        try:
            module = __import__(f"{__name__}.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    """Entry point of the ``dear-local`` console script.

    typer runs in its standalone mode, so usage errors (unknown option or
    command, missing or malformed value) take click's own path for whichever
    click the installed typer uses: usage line, message, exit 2. What is left
    to handle here is dear-local's own errors and the unexpected.
    """
    debug = get_settings().debug
    try:
        app(standalone_mode=True)
    except DearLocalError as exc:
        if debug:
            raise
        typer.echo(f"error: {safe(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {safe(str(exc))} (set DEAR_LOCAL_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
