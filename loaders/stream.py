"""The live stream: today's orders arriving at a steady rate, and their shipments moving forward."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pymysql

from runner import tidb
from runner.config import Settings
from runner.errors import EcomError

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

    def place_order(self, cur: pymysql.cursors.Cursor) -> Decimal:
        """One order and its express row; returns the order's amount."""
        index = int(self.rng.choice(len(self.item_ids), p=self.popularity))
        units = int(self.rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.13, 0.07]))
        amount = self.prices[index] * units
        now = self.settings.now()
        cur.execute(
            f"INSERT INTO {self.db}.orders (user_id, item_id, item_count, amount, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (int(self.rng.integers(1, self.max_user + 1)), int(self.item_ids[index]), units, amount, now),
        )
        carrier = CARRIERS[int(self.rng.integers(0, len(CARRIERS)))]
        cur.execute(
            f"INSERT INTO {self.xdb}.express (order_id, carrier, tracking_no, status, updated_at) "
            "VALUES (%s, %s, %s, 'created', %s)",
            (cur.lastrowid, carrier, f"{carrier[:3].upper()}{self.rng.integers(10**9, 10**10)}", now),
        )
        return amount

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


def stream(
    settings: Settings,
    spec: StreamSpec,
    on_tick: Callable[[StreamResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StreamResult:
    """Insert live orders (one transaction per second of orders, each order with its express row)."""
    spec.validate()
    result = StreamResult()
    with tidb.connection(settings, settings.tidb.database) as conn:
        tidb.require_schema(conn, settings.tidb)
        shop = _Shop.load(settings, conn, spec.seed)
        started = time.monotonic()
        owed = 0.0
        conn.autocommit(False)
        try:
            while spec.duration is None or time.monotonic() - started < spec.duration:
                if stop is not None and stop():
                    break
                tick = time.monotonic()
                owed += spec.rate
                count, owed = int(owed), owed - int(owed)
                with conn.cursor() as cur:
                    amounts = [shop.place_order(cur) for _ in range(count)]
                    moves = shop.advance_shipments(cur, max(1, count // 2))
                conn.commit()
                # counted only once committed: an interrupted tick is rolled back and not reported
                result.orders += len(amounts)
                result.amount += float(sum(amounts))
                result.status_moves += moves
                result.seconds = time.monotonic() - started
                if on_tick is not None:
                    on_tick(result)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        except KeyboardInterrupt:
            conn.rollback()  # the tick in flight is dropped whole
        finally:
            conn.autocommit(True)
    result.seconds = time.monotonic() - started
    return result
