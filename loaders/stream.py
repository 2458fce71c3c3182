"""The live stream: today's orders arriving at a steady rate, and their shipments moving forward.

A dropped connection (a TiDB restart, a network blip, a killed session) does not end the stream: it
reconnects (retries bounded in attempts and time) and goes on; the tick in flight counts only if it
committed. It stops with one clear line when it cannot get a connection back, or when the ticks keep
failing one after another.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pymysql

from runner import retry, tidb
from runner.config import Settings
from runner.errors import EcomError

log = logging.getLogger("ecom")
# Getting a connection back after a drop: some 12 s of attempts (0.5 + 1 + 2 + 4 + 4) before the stream gives up.
RECONNECT = retry.RetryPolicy(attempts=6, first_delay=0.5, max_delay=4.0, budget=15.0)
FAILED_TICKS_IN_A_ROW = 3  # a server that drops every tick: stop rather than reconnect forever

# The order a shipment's status moves in; each tick moves a few shipments one step.
NEXT_STATUS = {"created": "shipped", "shipped": "in_transit", "in_transit": "delivered"}
CARRIERS = ("SF Express", "JD Logistics", "ZTO", "YTO", "STO", "EMS", "DHL", "UPS")


@dataclass(frozen=True)
class StreamSpec:
    rate: float = 5.0  # orders per second
    duration: float | None = 10.0  # seconds; None runs until interrupted
    seed: int | None = None

    def validate(self) -> None:
        if not 0 < self.rate <= 10_000:
            raise EcomError(f"--rate must be above 0 and at most 10000 orders/s (got {self.rate})", "pick a rate")
        if self.duration is not None and not 0 < self.duration <= 7 * 86400:
            raise EcomError(f"--duration must be above 0 and at most a week (got {self.duration})", "pick a duration")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise EcomError(f"--seed must be a non-negative 63-bit number (got {self.seed})", "pick another seed")


@dataclass
class StreamResult:
    orders: int = 0
    amount: float = 0.0
    status_moves: int = 0
    seconds: float = 0.0


@dataclass
class _Shop:
    """What a live order is drawn from, and where it is written."""

    settings: Settings
    rng: np.random.Generator
    max_user: int
    item_ids: np.ndarray
    prices: list[Decimal]
    popularity: np.ndarray

    @property
    def db(self) -> str:
        return f"`{self.settings.tidb.database}`"

    @property
    def xdb(self) -> str:
        return f"`{self.settings.tidb.express_database}`"

    @classmethod
    def load(cls, settings: Settings, conn: pymysql.connections.Connection, seed: int | None) -> _Shop:
        rng = np.random.default_rng(seed)
        db = f"`{settings.tidb.database}`"
        with conn.cursor() as cur:
            max_user = int(tidb.scalar(cur, f"SELECT COALESCE(MAX(id), 0) FROM {db}.users"))
            cur.execute(f"SELECT id, price FROM {db}.items ORDER BY id")
            items = cur.fetchall()
        if not max_user or not items:
            raise EcomError("there are no users or items to order", "run `ecom generate` first")
        popularity = (1.0 / np.arange(1, len(items) + 1) ** 1.05)[rng.permutation(len(items))]
        return cls(
            settings,
            rng,
            max_user,
            np.array([row[0] for row in items]),
            [row[1] for row in items],
            popularity / popularity.sum(),
        )

    def place_order(self, cur: pymysql.cursors.Cursor) -> tuple[int, Decimal]:
        """One order and its express row; returns the order's id and amount."""
        index = int(self.rng.choice(len(self.item_ids), p=self.popularity))
        units = int(self.rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.13, 0.07]))
        amount = self.prices[index] * units
        now = self.settings.now()
        cur.execute(
            f"INSERT INTO {self.db}.orders (user_id, item_id, item_count, amount, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (int(self.rng.integers(1, self.max_user + 1)), int(self.item_ids[index]), units, amount, now),
        )
        order_id = int(cur.lastrowid)
        carrier = CARRIERS[int(self.rng.integers(0, len(CARRIERS)))]
        cur.execute(
            f"INSERT INTO {self.xdb}.express (order_id, carrier, tracking_no, status, updated_at) "
            "VALUES (%s, %s, %s, 'created', %s)",
            (order_id, carrier, f"{carrier[:3].upper()}{self.rng.integers(10**9, 10**10)}", now),
        )
        return order_id, amount

    def advance_shipments(self, cur: pymysql.cursors.Cursor, per_status: int) -> int:
        """Move the oldest shipments of each status one step forward (delivered is final)."""
        moved = 0
        now = self.settings.now()
        for status, following in reversed(list(NEXT_STATUS.items())):
            stamp = {"shipped": ", shipped_at = %s", "delivered": ", delivered_at = %s"}.get(following, "")
            params: tuple[object, ...] = (following, now, *((now,) if stamp else ()), status, per_status)
            moved += cur.execute(
                f"UPDATE {self.xdb}.express SET status = %s, updated_at = %s{stamp} WHERE status = %s "
                "ORDER BY updated_at, order_id LIMIT %s",
                params,
            )
        return moved


@dataclass
class _Tick:
    """One second of orders, in flight until committed."""

    order_ids: list[int] = field(default_factory=list)
    amounts: list[Decimal] = field(default_factory=list)
    moves: int = 0
    committing: bool = False  # COMMIT sent: if the connection drops now, the tick may have committed

    def run(self, conn: pymysql.connections.Connection, shop: _Shop, count: int) -> None:
        with conn.cursor() as cur:
            for _ in range(count):
                order_id, amount = shop.place_order(cur)
                self.order_ids.append(order_id)
                self.amounts.append(amount)
            self.moves = shop.advance_shipments(cur, max(1, count // 2))
        self.committing = True
        conn.commit()

    def committed(self, conn: pymysql.connections.Connection, db: str) -> bool:
        """Whether this tick, cut off during its COMMIT, committed after all (it is whole or absent, so its
        first order tells). A tick without orders counts as not committed."""
        if not (self.committing and self.order_ids):
            return False
        with conn.cursor() as cur:
            return bool(tidb.scalar(cur, f"SELECT COUNT(*) FROM {db}.orders WHERE id = %s", (self.order_ids[0],)))

    def add_to(self, result: StreamResult) -> None:
        result.orders += len(self.amounts)
        result.amount += float(sum(self.amounts))
        result.status_moves += self.moves


def _connect(settings: Settings) -> pymysql.connections.Connection:
    conn = tidb.connect(settings, settings.tidb.database)
    conn.autocommit(False)
    return conn


def _close(conn: pymysql.connections.Connection) -> None:
    with contextlib.suppress(Exception):  # a dropped connection has nothing left to close
        conn.close()


def _reconnect(settings: Settings, lost: Exception, result: StreamResult) -> pymysql.connections.Connection:
    """A new connection after a drop, retried (RECONNECT); one clear line when there is none to be had."""
    where = f"TiDB at {settings.tidb.host}:{settings.tidb.port}"
    log.warning("the stream lost its connection to %s (%s); reconnecting", where, _reason(lost))
    try:
        return retry.retrying(lambda: _connect(settings), RECONNECT)
    except (EcomError, pymysql.err.MySQLError) as exc:
        raise EcomError(
            f"the stream lost its connection to {where} and could not get it back ({_reason(exc)})",
            f"check the server and the network to it, then rerun `ecom stream`; {_kept(result)}",
        ) from None


def _kept(result: StreamResult) -> str:
    return f"the {result.orders} orders streamed until then are kept, each with its express row"


def _reason(exc: Exception) -> str:
    """What went wrong, without advice (the stream's own message gives that): pymysql's text for a socket
    closed under it is "(0, '')", said as such."""
    if isinstance(exc, EcomError):
        return exc.what
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) > 1 and exc.args[1]:
        return str(exc.args[1])
    return "the connection was closed"


def stream(
    settings: Settings,
    spec: StreamSpec,
    on_tick: Callable[[StreamResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StreamResult:
    """Insert live orders (one transaction per second of orders, each order with its express row) until
    `spec.duration`, `stop()` or Ctrl-C. Ctrl-C drops the tick in flight whole; it ends a stream without a
    duration (the result is returned) and interrupts a timed one (KeyboardInterrupt, as anywhere)."""
    spec.validate()
    result = StreamResult()
    db = f"`{settings.tidb.database}`"
    started = time.monotonic()
    conn = _connect(settings)
    try:
        tidb.require_schema(conn, settings.tidb)
        shop = _Shop.load(settings, conn, spec.seed)
        owed = 0.0
        failed_in_a_row = 0
        while spec.duration is None or time.monotonic() - started < spec.duration:
            if stop is not None and stop():
                break
            began = time.monotonic()
            owed += spec.rate
            count, owed = int(owed), owed - int(owed)
            tick = _Tick()
            try:
                tick.run(conn, shop, count)
            except KeyboardInterrupt:
                _settle_interrupted(settings, conn, tick, result)
                raise
            except pymysql.err.MySQLError as exc:
                if not retry.is_transient(exc):
                    raise
                failed_in_a_row += 1
                if failed_in_a_row >= FAILED_TICKS_IN_A_ROW:
                    raise EcomError(
                        f"{failed_in_a_row} ticks of the stream in a row failed on TiDB at {settings.tidb.host}:"
                        f"{settings.tidb.port} ({_reason(exc)})",
                        f"check the server, then rerun `ecom stream`; {_kept(result)}",
                    ) from None
                conn = _recover(settings, conn, exc, result)
                if tick.committed(conn, db):
                    tick.add_to(result)
                continue
            failed_in_a_row = 0
            tick.add_to(result)  # counted only once committed: a tick cut off is rolled back and not reported
            result.seconds = time.monotonic() - started
            if on_tick is not None:
                on_tick(result)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    except KeyboardInterrupt:
        if spec.duration is not None:  # a timed stream (the demo's, say) is interrupted like any other step
            raise
        # Ctrl-C (or SIGTERM) is how a stream without a duration ends: what committed is reported
    finally:
        _close(conn)
    result.seconds = time.monotonic() - started
    return result


def _recover(
    settings: Settings, conn: pymysql.connections.Connection, lost: Exception, result: StreamResult
) -> pymysql.connections.Connection:
    """After a transient failure of a tick: the same connection, rolled back (a lock wait, a deadlock), or a
    new one when it dropped."""
    if conn.open:
        with contextlib.suppress(pymysql.err.MySQLError):
            conn.rollback()
            return conn
    _close(conn)
    return _reconnect(settings, lost, result)


def _settle_interrupted(
    settings: Settings, conn: pymysql.connections.Connection, tick: _Tick, result: StreamResult
) -> None:
    """Ctrl-C during a tick: rolled back, unless it was cut off in its COMMIT and committed after all (asked
    on a fresh connection, briefly: the user is waiting)."""
    if not tick.committing:
        with contextlib.suppress(Exception):  # the server rolls back a connection that is gone anyway
            conn.rollback()
        return
    with contextlib.suppress(Exception), tidb.connection(settings, settings.tidb.database, timeout=5) as fresh:
        if tick.committed(fresh, f"`{settings.tidb.database}`"):
            tick.add_to(result)
