"""Ctrl-C (SIGINT) and a CI runner's cancel (SIGTERM) as exceptions, and the few engine steps
that must run to their end once begun.

Both signals raise in the main thread, so every stage's cleanup (`except BaseException`,
`finally`) runs for either. SIGTERM raises `Terminate`, a KeyboardInterrupt, so whatever
cleans up after Ctrl-C cleans up after it too; only its exit code differs.

Inside `deferred()` a signal is noted instead of raised, and raised when the block ends: a
step whose outcome shipit must know to undo it (an image load whose archive was sent, a
cancelled docker build the engine is still winding down, the removal of what an interrupted
build made) runs to its end. A second signal while one is noted raises at once: the user
insists.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

from shipit.errors import Interrupted, Terminated


class Terminate(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt."""


_pending: list[int] = []
_depth = 0
# What the first deferred signal starts at once (the cancel of a docker build), so that the
# block can come to its end.
_on_first: list[Callable[[], None]] = []


def install() -> None:
    """Called once, in the main thread, by the console script. A signal that the parent
    process ignores (`nohup`, a shell's background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_signal)


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminate() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _depth and not _pending:
        _pending.append(signum)
        for start in _on_first:
            start()
        return
    _pending.clear()
    raise _exception(signum)


def pending() -> bool:
    return bool(_pending)


def raise_pending() -> None:
    """Raises the signal that came during a deferred block, if any, and forgets it."""
    if _pending:
        raise _exception(_pending.pop())


@contextlib.contextmanager
def deferred(on_signal: Callable[[], None] | None = None) -> Iterator[None]:
    """The block runs to its end; a signal that came meanwhile is raised after it (from the
    outermost such block), even when the block itself failed. `on_signal` runs as that
    signal comes (in the signal handler: it must be quick and raise nothing), and at once if
    one came before the block."""
    global _depth  # noqa: PLW0603 - signal handlers can only see module state
    if threading.current_thread() is not threading.main_thread():
        # Signals reach the main thread only: there is nothing to defer here.
        yield
        return
    _depth += 1
    if on_signal is not None:
        _on_first.append(on_signal)
        if _pending:
            on_signal()
    try:
        yield
    finally:
        if on_signal is not None:
            _on_first.remove(on_signal)
        _depth -= 1
        if not _depth:
            raise_pending()


def between_pieces(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces of an upload made inside deferred(), ended by a signal that came meanwhile
    (raised between two pieces: the upload stops there and the engine gets an unfinished
    body). Never after the last piece: once the engine has the whole body, it acts on it
    whatever shipit does, and the deferred block waits for its answer."""
    held: bytes | None = None
    for piece in pieces:
        if held is not None:
            yield held
        raise_pending()
        held = piece
    if held is not None:
        yield held


def error_for(stopped: BaseException, outcome: str) -> Interrupted:
    """The one error to report for an interrupt, saying what became of the command's work:
    Terminated (exit 143) for SIGTERM, else Interrupted (exit 130). Click hands Ctrl-C back
    as its own Abort, raised from the KeyboardInterrupt."""
    causes = (stopped, stopped.__cause__, stopped.__context__)
    if any(isinstance(cause, Terminate) for cause in causes):
        return Terminated(f"terminated (SIGTERM): {outcome}")
    return Interrupted(f"interrupted: {outcome}")
