"""Failpoints: named places where a crash test can kill the process, as TiDB's own failpoints do.

`ECOM_FAILPOINT=archive.after_stage` (a comma-separated list) makes the process SIGKILL itself when it
reaches that point: no cleanup, no `finally`, no flush — the same as a power cut or an OOM kill. Unset, a
failpoint costs one dictionary lookup.

`ECOM_FAILPOINT_PAUSE=archive.after_stage=/tmp/gate` makes the process stop there instead: it creates
`/tmp/gate.reached` and waits (two minutes at most) until `/tmp/gate` exists, so a test can act on the
server (kill its connections, signal the process) while the run is at a known point.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "ECOM_FAILPOINT"
PAUSE_ENV = "ECOM_FAILPOINT_PAUSE"
PAUSE_LIMIT_SECONDS = 120


def armed() -> set[str]:
    return {name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()}


def hit(name: str) -> None:
    """Die here, at once and uncleanly, if this failpoint is armed."""
    if name in armed():
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, gate = os.environ.get(PAUSE_ENV, "").partition("=")
    if gate and point == name:
        Path(gate + ".reached").touch()
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
