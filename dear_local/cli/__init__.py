"""The ``dear-local`` command: a small typer app over the library functions.

Each command group lives in its own module and registers itself on ``app``: the runtime's here,
the workstation's (convert, quantize, reference, check, ...) from ``dear_local_convert`` through the
``dear_local.commands`` entry points (:mod:`.plugins`), so the runtime never imports that package.
Expected failures (``DearLocalError``) print one line and exit 2; set
``DEAR_LOCAL_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from ..errors import DearLocalError, DiskFullError, UserInputError
from ..settings import get_settings
from .messages import safe, shorten

app = typer.Typer(
    name="dear-local",
    help="Run the DeAR listwise reranker locally through llama.cpp, and check quantized models "
    "against the full-precision reference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from . import env, evaluate, runtime, serve
    from .plugins import register_plugins

    runtime.register(app)
    env.register(app)
    evaluate.register(app)
    serve.register(app)
    register_plugins(app)  # the workstation commands (dear_local_convert) and any other package's


_register()


# Exit status after the reader of standard output went away (``| head -1``): 128 + SIGPIPE, what a
# shell reports for coreutils killed by the same closed pipe, so `set -o pipefail` sees it the same way.
EXIT_CLOSED_PIPE = 141


def _silence_stdout() -> None:
    """Point standard output at the null device, so the interpreter's last flush at exit writes
    nothing and prints no "Exception ignored" message for the stream that failed."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _stdout_failed(exc: OSError) -> bool:
    """Whether ``exc`` came from writing standard output: a frame it passed through was writing to a
    stream on file descriptor 1 (click's ``echo``), or it came from the last flush in :func:`main`."""
    import io

    if getattr(exc, "dear_local_stdout", False):
        return True
    def is_stdout(value) -> bool:
        if value is sys.stdout or value is sys.__stdout__:
            return True
        if isinstance(value, io.IOBase):
            try:
                return value.fileno() == 1
            except (OSError, ValueError):
                return False
        return False

    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            # the stream itself (click's echo), or an object writing to it (rich's Console for --help)
            if is_stdout(value) or is_stdout(getattr(value, "file", None)):
                return True
        tb = tb.tb_next
    return False


def _fd1_target() -> str | None:
    try:
        return os.readlink("/proc/self/fd/1")
    except OSError:
        return None


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        exc.dear_local_stdout = True
        raise


def _run_app() -> None:
    """Run the app; a usage error is one line, ``error: <click's message> (see '<command> --help')``, exit 2.

    click's standalone mode would print the usage line, a hint and the message in a frame (four
    lines or more); the message alone, with the command to ask for help, says the same in one.
    Everything else is as in standalone mode: ``--help`` and an explicit exit (Ctrl-C is 130) end
    with their status, and other exceptions reach :func:`main`.
    """
    from typer import core

    # typer 0.29 carries its own copy of click (typer._click); earlier releases use click itself
    click = getattr(core, "_click", None)
    if click is None:  # pragma: no cover - typer < 0.29
        import click
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    abort = tuple({c for c in (getattr(core, "Abort", None), getattr(click.exceptions, "Abort", None)) if c is not None})
    try:
        rv = app(standalone_mode=False, prog_name=_prog_name())
    except no_args as exc:
        # no command given: the help, as standalone mode shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        typer.echo(f"error: {safe(shorten(exc.format_message()))} (see '{safe(_help_path(exc))} --help')", err=True)
        sys.exit(exc.exit_code)
    except abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    if isinstance(rv, int) and not isinstance(rv, bool):
        sys.exit(rv)  # an explicit exit, which non-standalone mode returns


def _prog_name() -> str:
    """How the user started the command, for messages: ``python -m dear_local`` or the script's name.

    Read from ``sys.argv[0]`` rather than from the ``__main__`` module (click's way), which names
    the host program (``python -m pytest``) when the app runs inside another one.
    """
    arg0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(arg0) == "__main__.py" and os.path.basename(os.path.dirname(arg0)) == "dear_local":
        return "python -m dear_local"
    return os.path.basename(arg0) or "dear-local"


def _help_path(exc) -> str:
    """The command whose ``--help`` explains a usage error: the subcommand's when one was named.

    A value missing after an option (``rerank -m``) is raised with no context, or with the
    group's, so the subcommand is then read from the command line.
    """
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.parent is not None:
        return ctx.command_path
    prog = ctx.command_path if ctx is not None else _prog_name()
    from typer.main import get_command

    commands = getattr(get_command(app), "commands", {}) or {}
    first = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    return f"{prog} {first}" if first in commands else prog


def main() -> None:
    """Entry point of the ``dear-local`` console script.

    A usage error (unknown option or command, missing or malformed value) is
    one line naming the command whose ``--help`` explains, exit 2
    (:func:`_run_app`); dear-local's own errors are one line with their exit
    status, and the unexpected one line unless ``DEAR_LOCAL_DEBUG=1``.

    Standard output that cannot be written: a full disk or device (ENOSPC, EDQUOT) is one line,
    ``error: standard output (...) is full: ...``, with a full disk's exit status; a reader that went away (EPIPE, ``| head -1``)
    ends the command quietly with exit 141, as coreutils do.
    """
    debug = get_settings().debug
    if sys.stdin is None:  # started with standard input closed (`<&-`): it reads as empty
        sys.stdin = open(os.devnull, encoding="utf-8")
    stdout_at_start = _fd1_target()
    try:
        try:
            _run_app()
        except SystemExit as exc:
            # click ends a command whose reader went away with exit 1 after pacifying stdout; rich (--help)
            # with exit 1 after pointing standard output at the null device
            if exc.code == 1 and (type(sys.stdout).__name__ == "PacifyFlushWrapper"
                                  or (stdout_at_start != os.devnull and _fd1_target() == os.devnull)):
                _silence_stdout()
                raise SystemExit(EXIT_CLOSED_PIPE) from None
            raise
        finally:
            _flush_stdout()  # a failed write shows here, while it can still be reported, not at exit
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(EXIT_CLOSED_PIPE)
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
        if isinstance(exc, ValueError) and "null byte" in str(exc):
            # os calls refuse a path holding "\x00" with a bare ValueError; whichever path it was, name the fix
            typer.echo("error: a path given contains a NUL byte (\\x00), which no file name can hold; fix the path",
                       err=True)
            sys.exit(UserInputError.exit_code)
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            typer.echo(f"error: a path given is too long for the file system ({safe(shorten(str(exc), 200))}); "
                       "fix the path", err=True)
            sys.exit(UserInputError.exit_code)
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            _silence_stdout()
            sys.exit(EXIT_CLOSED_PIPE)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) \
                and _stdout_failed(exc):
            from ..fileio import stdout_name

            name = stdout_name()
            _silence_stdout()
            typer.echo(f"error: {safe(name)} is full: no space left on device; "
                       "free some space, or send the output to a file on a disk with room", err=True)
            sys.exit(DiskFullError.exit_code)
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {safe(str(exc))} (set DEAR_LOCAL_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
