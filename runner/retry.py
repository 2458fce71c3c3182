"""Retries for failures that pass (a dropped connection, a lock wait timeout, a deadlock), with backoff
bounded in attempts and in time. Failures that do not pass (a wrong password, a missing database, a bad
argument) are raised at once: retrying them only delays the message."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pymysql

from runner import interrupt
from runner.errors import TransientError

T = TypeVar("T")

# MySQL/TiDB error codes of failures that a retry can get past.
TRANSIENT_CODES = {
    1205,  # lock wait timeout
    1213,  # deadlock
    2003,  # cannot connect (server restarting, network blip)
    2006,  # server has gone away
    2013,  # lost connection during a query
    8022,  # TiDB: transaction commit failed, can retry
    8027,  # TiDB: schema changed during the transaction
    8028,  # TiDB: information schema changed
    9001,  # TiDB: PD server timeout
    9002,  # TiDB: TiKV server timeout
    9005,  # TiDB: region unavailable
    9007,  # TiDB: write conflict
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 8.0
    budget: float = 30.0  # seconds of waiting between attempts, all retries together (1+2+4+8 ≈ 15 s)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or the error it was raised while handling (a cursor failing to close on a dropped
    connection, say), is one that a retry can get past."""
    seen: BaseException | None = exc
    while seen is not None:
        if _transient_itself(seen):
            return True
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InternalError):
        return bool(exc.args) and exc.args[0] in TRANSIENT_CODES
    if isinstance(exc, pymysql.err.InterfaceError):  # the socket closed under us
        return True
    try:
        from snowflake.connector.errors import OperationalError as WarehouseOperationalError
    except ImportError:  # pragma: no cover - the connector is a dependency
        return False
    # the connector's network-level errors (its login and query failures are DatabaseError/ProgrammingError)
    return isinstance(exc, WarehouseOperationalError)


def retrying(
    action: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`; after a transient failure wait (exponential backoff with jitter) and run it again.

    `action` must be safe to rerun from the start: every step that moves rows here is idempotent. Once the
    user has interrupted the process (runner.interrupt), a failure is raised as KeyboardInterrupt instead.
    """
    waited = 0.0
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as exc:
            if interrupt.requested():  # what a Ctrl-C turned into (a dropped connection, say): never rerun it
                raise KeyboardInterrupt from exc
            delay = min(policy.max_delay, policy.first_delay * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if not is_transient(exc) or attempt == policy.attempts or waited + delay > policy.budget:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            sleep(delay)
            waited += delay
    raise AssertionError("unreachable: the last attempt returns or raises")
