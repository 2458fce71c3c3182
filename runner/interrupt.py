"""Ctrl-C and SIGTERM: once the user stops a run, nothing retries it, and the CLI ends with one line.

`install()` (the CLI's `main` calls it) replaces Python's handlers. The first signal is recorded, then
raised as KeyboardInterrupt where the main thread is, so every `finally` still runs (transactions roll
back, leases are released, temporary files go). Whatever that interrupt turns into on its way up (a lost
connection, a failed dbt run, an error of the warehouse stand-in), `requested()` tells that the user stopped
the run: retries give up and the CLI prints `interrupted` (SIGTERM: `terminated`) and exits 128 + the signal
(130, 143). A second signal while that cleanup runs ends the process at once, with the same line and code.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

_WORDS: dict[int, bytes] = {signal.SIGINT: b"interrupted\n", signal.SIGTERM: b"terminated\n"}
_received: int | None = None
_reported = False
_settled: int | None = None  # the exit code, once the command's outcome is known
_on_first: list[Callable[[], None]] = []  # see `also`


def install() -> None:
    for signum in _WORDS:
        signal.signal(signum, _handle)


def _handle(signum: int, _frame: FrameType | None) -> None:
    global _received
    if _settled is not None:  # the command is over, only the interpreter's shutdown is left: end it now
        os._exit(_settled)
    if _received is not None:  # the second one: the user will not wait for the cleanup
        os._exit(report())
    _received = signum
    for action in list(_on_first):
        with contextlib.suppress(Exception):
            action()
    raise KeyboardInterrupt


@contextlib.contextmanager
def also(action: Callable[[], None]) -> Iterator[None]:
    """While the block runs, the first signal also does `action` (at once, in the handler) before it raises
    KeyboardInterrupt: for a wait that the interrupt alone does not end (see loaders/bulk.py)."""
    _on_first.append(action)
    try:
        yield
    finally:
        _on_first.remove(action)


def settle(code: int) -> None:
    """The command's outcome is known and said: a signal from now on (in the interpreter's shutdown: atexit
    handlers, threads) ends the process at once with `code` instead of a KeyboardInterrupt traceback."""
    global _settled
    _settled = code


def requested() -> bool:
    """Whether the user has asked this process to stop (read by retries, loops and the producer threads)."""
    return _received is not None


def report() -> int:
    """Say once, on stderr, that the run was stopped; returns the exit code for it (128 + the signal)."""
    global _reported
    signum = _received if _received is not None else signal.SIGINT
    if not _reported:
        _reported = True
        # os.write, not print: this may run inside a signal handler, in the middle of another write
        with contextlib.suppress(OSError):
            os.write(2, _WORDS.get(signum, b"interrupted\n"))
    return 128 + signum
