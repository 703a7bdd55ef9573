"""Every error dear-local raises on purpose, in one place.

Each message says what went wrong and what to do about it. The CLI prints
``error: <message>`` and exits with code 2 for any of these; set
``DEAR_LOCAL_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations


class DearLocalError(Exception):
    """Base class: an expected failure with a message that names the fix."""

    exit_code = 2


class UserInputError(DearLocalError, ValueError):
    """The caller passed something unusable (empty query, no documents, bad flag)."""


class UnknownTemplateError(UserInputError):
    """A template name that is not installed."""


class UnknownProfileError(UserInputError):
    """A profile setting that is not valid (decoding mode, window, stride)."""


class UnknownModelError(UserInputError):
    """A model name with no manifest, or a quant the manifest does not list."""


class ModelNotFoundError(DearLocalError, FileNotFoundError):
    """The model file is not on disk."""


class InvalidModelFileError(DearLocalError):
    """The file exists but is not a usable GGUF (wrong magic, truncated, corrupt)."""


class ChatTemplateError(DearLocalError):
    """A model's chat template cannot be used safely (it rewrites the messages' text)."""


class ContextOverflowError(UserInputError):
    """A prompt does not fit in the model's context window."""


class MissingExtraError(DearLocalError, ImportError):
    """An optional dependency is missing; the message names the pip extra."""


class OfflineError(DearLocalError):
    """A download was needed while offline mode is on."""


class DownloadError(DearLocalError):
    """A download failed or its checksum did not match."""


class DiskFullError(DearLocalError, OSError):
    """No space left (or the quota is used up) on the disk a file is written to; the message names the disk."""

    exit_code = 1


class ConversionError(DearLocalError):
    """A checkpoint cannot be converted (architecture, tokenizer, shards, output dir)."""


class QuantizeError(DearLocalError):
    """llama.cpp's quantizer refused or failed."""


class ReferenceError_(DearLocalError):
    """A reference file is corrupt or does not match what the check was asked to do."""


class DataError(DearLocalError):
    """An eval slice is missing, corrupt, or does not match its pinned checksum."""


class NativeCrashError(DearLocalError):
    """llama.cpp crashed (a signal such as SIGSEGV) in a child process; the message names the setting to try."""

    exit_code = 1


class ServerError(DearLocalError):
    """An inference server (llama-server, vLLM, SGLang) is unreachable, refused a request,
    or serves a different tokenizer than the one the prompts are built with.

    ``status`` is the HTTP status when a server answered and refused the request, else None.
    """

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GateFailure(DearLocalError):
    """An agreement gate failed; raised after the report has been written."""

    exit_code = 1


def missing_extra(package: str, extra: str) -> MissingExtraError:
    """The error for an optional dependency that is not installed."""
    return MissingExtraError(
        f"{package} is not installed; it comes with the '{extra}' extra: "
        f'pip install "dear-local[{extra}]"'
    )


def extra_import_error(exc: ImportError, package: str, module: str, extra: str) -> MissingExtraError:
    """The error for a failed import of an optional framework (``module``, installed as ``package``).

    When ``module`` cannot be found it is not installed (:func:`missing_extra`); when it can, the
    failure means an installed version that lacks what dear-local uses, so the
    message names the installed version and the extra that pins one that works.
    """
    import importlib.util

    try:
        installed_module = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a package above it is missing, or blocked
        installed_module = False
    if not installed_module:
        return missing_extra(package, extra)
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version(package)
    except PackageNotFoundError:
        installed = "of unknown version"
    return MissingExtraError(
        f"the installed {package} {installed} does not provide what dear-local uses ({exc}); "
        f'upgrade it with the \'{extra}\' extra: pip install -U "dear-local[{extra}]"'
    )


def require_extra(extra: str, *packages: str) -> None:
    """Import each of ``packages`` (module names that are also their distributions') in turn; raise
    :func:`extra_import_error` for the first that fails: not installed, or installed without what is needed."""
    for package in packages:
        try:
            __import__(package)
        except ImportError as exc:
            raise extra_import_error(exc, package, package, extra) from exc
