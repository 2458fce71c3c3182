"""Failpoints: named places where a crash test can kill the process, as TiDB's own failpoints do.

`ECOM_FAILPOINT=archive.after_stage` (a comma-separated list) makes the process SIGKILL itself when it
reaches that point: no cleanup, no `finally`, no flush — the same as a power cut or an OOM kill. Unset, a
failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "ECOM_FAILPOINT"


def armed() -> set[str]:
    return {name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()}


def hit(name: str) -> None:
    """Die here, at once and uncleanly, if this failpoint is armed."""
    if name in armed():
        os.kill(os.getpid(), signal.SIGKILL)
