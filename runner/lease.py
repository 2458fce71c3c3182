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
from pathlib import Path
from typing import Any

import pymysql

from runner import tidb
from runner.config import Settings
from runner.errors import EcomError

log = logging.getLogger("ecom")
# another run is taking the lease at the same moment: a duplicate first row, a lock wait timeout (the row
# locked by a purge batch's renewal), a deadlock between two first takers' gap locks, a TiDB write conflict
_BUSY = {1062, 1205, 1213, 8022, 9007}
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


def _process_identity(pid: int) -> str | None:
    """The pid namespace and start time of process `pid` here (None: no such process, or not Linux): a pid
    alone is reused, and means another process in another container on the same host name."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid").strip("pid:[]")
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{namespace}.{started}"


def _holder_id() -> str:
    """host:pid:identity:nonce, who takes a lease: enough to tell, on this host, that it died."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_identity(os.getpid()) or '-'}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """Whether `holder` was a process of this host and pid namespace that is gone (killed): its lease need not
    be waited out. Anything this process cannot tell for sure (another host, another namespace) is alive."""
    parts = holder.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit() or parts[2] == "-":
        return False
    pid, identity = int(parts[1]), parts[2]
    mine = _process_identity(os.getpid())
    if mine is None or pid == os.getpid() or identity.split(".")[0] != mine.split(".")[0]:
        return False
    return _process_identity(pid) != identity  # gone, or the pid now names another process


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

    @property
    def _timeout(self) -> float:
        """Each read and write of a renewal: a renewal that hangs must not outlast the lease unseen."""
        return max(1.0, self.seconds / 4)

    def _renew(self, conn: pymysql.connections.Connection) -> bool:
        """Extend the lease if it is still this holder's. An expired lease nobody took is still ours: whoever
        takes one changes its holder and token, which is all this checks."""
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(
                f"UPDATE {self._table} SET expires_at = GREATEST(expires_at, UTC_TIMESTAMP(6)) "
                "+ INTERVAL %s SECOND WHERE name = %s AND holder = %s AND token = %s",
                (self.seconds, self.key, self.holder, self.token),
            )
            return cur.rowcount == 1

    def ensure(self, before: str, conn: pymysql.connections.Connection | None = None) -> None:
        """Renew the lease now, or stop with LeaseLost: call it right before each write the lease protects.
        `conn` in an open transaction keeps the lease row locked until that transaction ends. A renewal that
        took longer than half a lease (a slow answer, a pause) does not count: the lease it bought may be
        running out by the time this returns."""
        if not self._lost.is_set():
            started = time.monotonic()
            if conn is not None:
                held = self._renew(conn)
            else:
                with tidb.connection(self.settings, timeout=self._timeout) as fresh:
                    held = self._renew(fresh)
            if held and time.monotonic() - started < self.seconds / 2:
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
                with tidb.connection(self.settings, timeout=self._timeout) as conn:
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
        with (
            contextlib.suppress(Exception),
            tidb.connection(self.settings, timeout=self._timeout) as conn,
            conn.cursor() as cur,
        ):
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
    except pymysql.err.MySQLError as exc:
        with contextlib.suppress(Exception):
            conn.rollback()
        if exc.args and exc.args[0] in _BUSY:  # another run takes or holds the row at this moment
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
        # a row locked by another run is waited for a second at a time, not innodb's default 50 s
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        while True:
            taken = _try_take(conn, table, key, holder, doing, settings.lock_lease_seconds)
            if isinstance(taken, int):
                break
            if time.monotonic() >= deadline:
                who = (
                    f"{taken.holder}: {taken.doing}, lease renewed for {taken.seconds_left} s more" if taken else "busy"
                )
                raise EcomError(
                    f"another {doing} is running ({who}); two at once could both write",
                    "wait for it to finish, then run this again",
                )
            if taken is not None and not announced and wait_seconds >= 10:
                log.warning("waiting up to %d s for %s (%s) to finish", wait_seconds, taken.holder, taken.doing)
                announced = True
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    lease = Lease(settings, key, doing, holder, taken)
    lease._start()
    try:
        yield lease
    finally:
        lease._release()
