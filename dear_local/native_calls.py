"""Python functions that llama.cpp calls back, and Ctrl-C while llama.cpp runs.

ctypes cannot pass an exception raised inside a callback back through C: it prints
"Exception ignored on calling ctypes callback" and carries on, so a Ctrl-C that
lands in a log or progress callback used to be lost and the native call ran to
the end. The helpers here keep it:

- :class:`CallbackErrors` wraps each callback; the first exception it raises is
  recorded (the callback then returns a value that asks llama.cpp to stop, where
  the API has one, such as ``False`` from a model-load progress callback) and
  :meth:`CallbackErrors.raise_pending` raises it once the native call is back.
- :func:`hold_interrupts` makes SIGINT during a native call set a flag instead of
  raising inside whatever callback happens to be running; the flag is visible to
  callbacks (``interrupted``) and becomes a ``KeyboardInterrupt`` when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator


class CallbackErrors:
    """Records the first exception raised by any callback it wraps; ``interrupted`` is set by SIGINT."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.interrupted = False

    @property
    def failed(self) -> bool:
        """True once a callback raised or SIGINT arrived: a callback that can abort should."""
        return self.error is not None or self.interrupted

    def wrap(self, fn: Callable[..., Any], on_error: Any = None) -> Callable[..., Any]:
        """``fn`` as a callback that never raises into C: an exception is recorded and ``on_error`` returned."""

        def callback(*args):
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by raise_pending
                if self.error is None:
                    self.error = exc
                return on_error

        return callback

    def raise_pending(self) -> None:
        """Raise what a callback raised (or ``KeyboardInterrupt`` for a held SIGINT), once."""
        error, self.error = self.error, None
        interrupted, self.interrupted = self.interrupted, False
        if error is not None:
            raise error
        if interrupted:
            raise KeyboardInterrupt


@contextlib.contextmanager
def hold_interrupts(errors: CallbackErrors | None = None) -> Iterator[CallbackErrors]:
    """Run a native call with SIGINT held: it sets ``errors.interrupted`` and is raised when the block ends.

    Callback exceptions recorded in ``errors`` are raised then too. When the block
    raises because a callback asked the native call to stop (a model load cancelled by
    its progress callback), the held exception or ``KeyboardInterrupt`` is raised in its
    place, with the block's error as its cause. Outside the main thread (where Python cannot set signal
    handlers) only the callback errors are kept.
    """
    errors = errors if errors is not None else CallbackErrors()
    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():

        def on_sigint(signum, frame):
            errors.interrupted = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        installed = True
    try:
        yield errors
    except BaseException as exc:
        if errors.failed:  # the call failed because a callback asked it to stop: say why it stopped
            try:
                errors.raise_pending()
            except BaseException as pending:
                raise pending from exc
        raise
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    errors.raise_pending()
