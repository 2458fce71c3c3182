"""Leases: the runs that must take turns (archive, purge and generate's archive reset on one warehouse;
exports into one TiDB database) hold a lease row in TiDB instead of a named lock.

Why not GET_LOCK: a named lock lives exactly as long as one connection. TiDB Cloud cuts idle connections
(about 340 s on Starter's public endpoint) and long-lived ones (30 min), and TiDB bounds GET_LOCK by
max-txn-ttl (1 h): the lock would lapse in the middle of a long run, silently, and a second run could start.

The design: a row `run_leases(name, holder, token, expires_at)` in the business database.
- Taking it: in one transaction, the row is read FOR UPDATE and taken when it is absent, expired, or held by a
  process of this host that no longer exists (a killed run need not be waited out); `token` grows by one at
  each new holder (a fencing token). A second run polls until `wait_seconds`, then stops with one line.
- Keeping it: a thread renews `expires_at` every quarter of the lease, each time on a fresh connection, so no
  connection has to stay up or idle; a renewal only extends a lease this holder still has and that has not
  expired.
- Fencing: right before each write it protects (publishing an archive, a purge's delete, an export's swap,
  dropping the archive) the run calls `Lease.ensure`, which renews it synchronously. If another run took it (this
  one was paused or cut off longer than the lease), the run stops there with `LeaseLost`, before it writes.
  Given a connection in an open transaction, the renewal row-locks the lease until that transaction ends: no
  one can take the lease between the check and the commit. Otherwise (a RENAME, which commits by itself; a
  warehouse commit) the renewal leaves a whole lease period for the write that follows.
Times are the server's clock (UTC_TIMESTAMP), so clients' clocks do not matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql

from runner import tidb
from runner.config import Settings
from runner.errors import EcomError

log = logging.getLogger("ecom")
_DUPLICATE_KEY = 1062
_POLL_SECONDS = 0.5


class LeaseLost(EcomError):
    """The lease passed to another run: this one must not write."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease now, as the row says."""

    holder: str
    doing: str
    seconds_left: int


def lease_key(name: str) -> str:
    return "ecom:" + hashlib.sha1(name.encode()).hexdigest()[:40]  # fits VARCHAR(64), any name


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """Whether `holder` was a process of this host that is gone (killed): its lease need not be waited out."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@dataclass
class Lease:
    settings: Settings
    key: str
    doing: str
    holder: str
    token: int
    _stop: threading.Event = field(default_factory=threading.Event)
    _lost: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def seconds(self) -> int:
        return self.settings.lock_lease_seconds

    @property
    def _table(self) -> str:
        return f"`{self.settings.tidb.database}`.run_leases"

    def _renew(self, conn: pymysql.connections.Connection) -> bool:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(
                f"UPDATE {self._table} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND "
                "WHERE name = %s AND holder = %s AND token = %s AND expires_at > UTC_TIMESTAMP(6)",
                (self.seconds, self.key, self.holder, self.token),
            )
            return cur.rowcount == 1

    def ensure(self, before: str, conn: pymysql.connections.Connection | None = None) -> None:
        """Renew the lease now, or stop with LeaseLost: call it right before each write the lease protects.
        `conn` in an open transaction keeps the lease row locked until that transaction ends."""
        if not self._lost.is_set():
            if conn is not None:
                held = self._renew(conn)
            else:
                with tidb.connection(self.settings) as fresh:
                    held = self._renew(fresh)
            if held:
                return
            self._lost.set()
        raise LeaseLost(
            f"this {self.doing} lost its lock: it was paused or cut off for longer than its "
            f"{self.seconds} s lease (ECOM_LOCK_LEASE_SECONDS) and another run took over; stopped before {before}",
            "nothing of that was written: run it again once the other run is done",
        )

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                with tidb.connection(self.settings) as conn:
                    if not self._renew(conn):
                        self._lost.set()
                        return
            except Exception:  # a blip: the next tick tries again, and `ensure` decides before any write
                continue

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._keep_alive, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # expire it rather than delete it: the token keeps growing across holders
        with contextlib.suppress(Exception), tidb.connection(self.settings) as conn, conn.cursor() as cur:
            cur.execute(
                f"UPDATE {self._table} SET expires_at = UTC_TIMESTAMP(6) "
                "WHERE name = %s AND holder = %s AND token = %s",
                (self.key, self.holder, self.token),
            )


def _try_take(
    conn: pymysql.connections.Connection, table: str, key: str, holder: str, doing: str, seconds: int
) -> int | Holder | None:
    """Take the lease in one transaction: its new token, or who holds it (None: a race, try again)."""
    conn.begin()
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(
                f"SELECT holder, token, doing, expires_at > UTC_TIMESTAMP(6), "
                f"TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), expires_at) FROM {table} WHERE name = %s FOR UPDATE",
                (key,),
            )
            row: Any = cur.fetchone()
            if row is not None and row[3] and not _dead_here(row[0]):
                conn.rollback()
                return Holder(str(row[0]), str(row[2]), max(0, int(row[4])))
            if row is None:
                token = 1
                cur.execute(
                    f"INSERT INTO {table} (name, holder, token, doing, acquired_at, expires_at) VALUES "
                    "(%s, %s, 1, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) + INTERVAL %s SECOND)",
                    (key, holder, doing[:200], seconds),
                )
            else:
                token = int(row[1]) + 1
                cur.execute(
                    f"UPDATE {table} SET holder = %s, token = %s, doing = %s, acquired_at = UTC_TIMESTAMP(6), "
                    "expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE name = %s",
                    (holder, token, doing[:200], seconds, key),
                )
        conn.commit()
        return token
    except pymysql.err.IntegrityError as exc:
        conn.rollback()
        if exc.args and exc.args[0] == _DUPLICATE_KEY:  # another run inserted the first row at the same moment
            return None
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise


@contextlib.contextmanager
def hold(settings: Settings, name: str, doing: str, wait_seconds: float) -> Iterator[Lease]:
    """Hold the lease `name` for the block, kept alive meanwhile; wait up to `wait_seconds` for another
    holder, then stop with a clear message."""
    key, holder = lease_key(name), _holder_id()
    table = f"`{settings.tidb.database}`.run_leases"
    deadline = time.monotonic() + wait_seconds
    announced = False
    with tidb.connection(settings) as conn:
        while True:
            taken = _try_take(conn, table, key, holder, doing, settings.lock_lease_seconds)
            if isinstance(taken, int):
                break
            if isinstance(taken, Holder):
                if time.monotonic() >= deadline:
                    raise EcomError(
                        f"another {doing} is running ({taken.holder}: {taken.doing}, lease renewed for "
                        f"{taken.seconds_left} s more); two at once could both write",
                        "wait for it to finish, then run this again",
                    )
                if not announced and wait_seconds >= 10:
                    log.warning("waiting up to %d s for %s (%s) to finish", wait_seconds, taken.holder, taken.doing)
                    announced = True
                time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    lease = Lease(settings, key, doing, holder, taken)
    lease._start()
    try:
        yield lease
    finally:
        lease._release()
