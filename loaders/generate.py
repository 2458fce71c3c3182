"""Realistic business history, generated with numpy over small Faker pools and bulk-loaded into TiDB.

Deterministic for a seed: the same spec gives the same rows. Heavy tails where real shops have them:
a few items sell most units, a few users place most orders, and a minority of affluent users buy the
expensive items. Orders follow a weekly and an hourly rhythm and grow slowly over the period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymysql
from faker import Faker

from loaders.bulk import load_batches
from runner import failpoints, tidb
from runner.config import Settings
from runner.errors import EcomError

Progress = Callable[[str, int, int], None]

# (type, log-price mean, log-price sigma, nouns): prices are log-normal per type.
ITEM_TYPES: list[tuple[str, float, float, tuple[str, ...]]] = [
    ("electronics", 5.3, 0.7, ("Headphones", "Phone", "Tablet", "Camera", "Speaker", "Monitor")),
    ("books", 2.9, 0.4, ("Novel", "Cookbook", "Guide", "Biography", "Atlas")),
    ("clothing", 3.7, 0.5, ("Jacket", "Shirt", "Dress", "Sneakers", "Scarf")),
    ("home", 3.9, 0.6, ("Lamp", "Kettle", "Blender", "Rug", "Pillow")),
    ("beauty", 3.2, 0.5, ("Serum", "Lipstick", "Perfume", "Shampoo")),
    ("sports", 4.1, 0.6, ("Racket", "Yoga Mat", "Bicycle Helmet", "Dumbbell")),
    ("toys", 3.3, 0.5, ("Puzzle", "Robot Kit", "Doll", "Board Game")),
    ("grocery", 2.2, 0.5, ("Coffee", "Tea", "Olive Oil", "Chocolate")),
    ("jewelry", 5.6, 0.8, ("Ring", "Necklace", "Watch", "Bracelet")),
    ("furniture", 5.9, 0.5, ("Sofa", "Desk", "Chair", "Bookshelf")),
]
HOUR_WEIGHTS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 5, 4.5, 4.5, 5, 5.5, 6, 7, 8, 7.5, 5, 2.5])
WEEKDAY_WEIGHTS = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25])  # Monday first
UNIT_CHOICES = np.array([1, 2, 3, 4])
UNIT_WEIGHTS = np.array([0.55, 0.25, 0.13, 0.07])
CARRIERS = np.array(["SF Express", "JD Logistics", "ZTO", "YTO", "STO", "EMS", "DHL", "UPS"])
AFFLUENT_SHARE = 0.2
ORDERS_PER_BLOCK = 200_000
USERS_PER_BLOCK = 200_000
POOL_SIZE = 400


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate: history over `days` days ending the day before `end_day`."""

    users: int = 100_000
    items: int = 10_000
    orders: int = 300_000
    days: int = 150
    seed: int = 42
    end_day: dt.date | None = None  # exclusive; default: today in the business time zone

    def validate(self) -> None:
        limits = {"users": 10**9, "items": 10**9, "orders": 10**10, "days": 36_500}
        for name, limit in limits.items():
            value = getattr(self, name)
            if not 1 <= value <= limit:
                raise EcomError(f"--{name} must be between 1 and {limit:,} (got {value})", "pick a size")
        if self.items < 2:
            raise EcomError("--items must be at least 2 (two price tiers need items)", "raise --items")
        if not 0 <= self.seed < 2**63:
            raise EcomError(f"--seed must be a non-negative 63-bit number (got {self.seed})", "pick another seed")


@dataclass(frozen=True)
class GenerateResult:
    users: int
    items: int
    orders: int
    express: int
    first_day: dt.date
    last_day: dt.date
    amount: float


class _Pools:
    """Small Faker pools: Faker costs ~0.2 ms a call, numpy indexing into a pool costs nothing."""

    def __init__(self, seed: int) -> None:
        fake = Faker("en_US")
        fake.seed_instance(seed)
        self.first = np.array(sorted({fake.first_name() for _ in range(POOL_SIZE)}))
        self.last = np.array(sorted({fake.last_name() for _ in range(POOL_SIZE)}))
        self.city = np.array(sorted({fake.city() for _ in range(POOL_SIZE // 2)}))
        self.domain = np.array(sorted({fake.free_email_domain() for _ in range(40)}))
        self.adjective = np.array(sorted({w.title() for w in fake.words(POOL_SIZE // 2)}))


def iter_users(spec: GenerateSpec, rng: np.random.Generator, pools: _Pools, start: dt.date) -> Iterator[pd.DataFrame]:
    """Users in blocks of USERS_PER_BLOCK: numpy builds names and emails in fixed-width string arrays, which
    for millions of users at once took gigabytes."""
    for first_id in range(1, spec.users + 1, USERS_PER_BLOCK):
        yield _users(first_id, min(USERS_PER_BLOCK, spec.users + 1 - first_id), rng, pools, start)


def _users(first_id: int, n: int, rng: np.random.Generator, pools: _Pools, start: dt.date) -> pd.DataFrame:
    first = pools.first[rng.integers(0, len(pools.first), n)]
    last = pools.last[rng.integers(0, len(pools.last), n)]
    ids = np.arange(first_id, first_id + n)
    domain = pools.domain[rng.integers(0, len(pools.domain), n)]
    local = np.char.add(np.char.add(np.char.lower(first), "."), np.char.lower(last))
    email = np.char.add(np.char.add(np.char.replace(local, " ", ""), ids.astype(str)), np.char.add("@", domain))
    signup = np.datetime64(start) - rng.integers(1, 3 * 365 * 86400, n).astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "id": ids,
            "name": pd.Series(first) + " " + pd.Series(last),
            "email": email,
            "city": pools.city[rng.integers(0, len(pools.city), n)],
            "created_at": signup,
        }
    )


def make_items(spec: GenerateSpec, rng: np.random.Generator, pools: _Pools, start: dt.date) -> pd.DataFrame:
    n = spec.items
    type_idx = rng.integers(0, len(ITEM_TYPES), n)
    mu = np.array([t[1] for t in ITEM_TYPES])[type_idx]
    sigma = np.array([t[2] for t in ITEM_TYPES])[type_idx]
    price_cents = np.clip(np.round(np.exp(rng.normal(mu, sigma)) * 100), 99, 999_999).astype(np.int64)
    noun_counts = np.array([len(t[3]) for t in ITEM_TYPES])
    noun_table = np.array([list(t[3]) + [""] * (noun_counts.max() - len(t[3])) for t in ITEM_TYPES])
    noun = noun_table[type_idx, rng.integers(0, 1 << 30, n) % noun_counts[type_idx]]
    adjective = pools.adjective[rng.integers(0, len(pools.adjective), n)]
    ids = np.arange(1, n + 1)
    name = pd.Series(adjective) + " " + pd.Series(noun) + " " + pd.Series(ids).map("{:05d}".format)
    added = np.datetime64(start) - rng.integers(1, 2 * 365 * 86400, n).astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "id": ids,
            "name": name,
            "item_type": np.array([t[0] for t in ITEM_TYPES])[type_idx],
            "price": price_cents / 100,
            "created_at": added,
        }
    )


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Heavy-tailed popularity over a random order of the ids."""
    weights = np.empty(n)
    weights[rng.permutation(n)] = 1.0 / np.arange(1, n + 1) ** exponent
    return weights


def _orders_per_day(spec: GenerateSpec, rng: np.random.Generator, first_day: dt.date) -> np.ndarray:
    days = np.arange(spec.days)
    weekday = (np.datetime64(first_day).astype("datetime64[D]").view("int64") + days + 3) % 7  # 1970-01-01 = Thu
    weights = WEEKDAY_WEIGHTS[weekday] * (1 + 0.4 * days / max(spec.days - 1, 1))
    return rng.multinomial(spec.orders, weights / weights.sum())


def iter_orders(
    spec: GenerateSpec, rng: np.random.Generator, items: pd.DataFrame, first_day: dt.date
) -> Iterator[pd.DataFrame]:
    """Orders in time order (ids ascending with time, as an auto-increment key gives), in bounded blocks."""
    per_day = _orders_per_day(spec, rng, first_day)
    # log-normal activity: the top 10% of users place about half the orders, nobody thousands
    user_weights = rng.lognormal(0.0, 1.4, spec.users)
    user_p = user_weights / user_weights.sum()
    affluent = rng.random(spec.users) < AFFLUENT_SHARE
    price_cents = np.round(items["price"].to_numpy() * 100).astype(np.int64)
    relative_price = price_cents / np.median(price_cents)
    popularity = _zipf_weights(rng, spec.items, 1.05)
    premium_p = popularity * relative_price**1.2
    premium_p /= premium_p.sum()
    regular_p = popularity * relative_price**-0.4
    regular_p /= regular_p.sum()
    hour_p = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
    next_id, day = 1, 0
    while day < spec.days:
        last = day
        block_orders = 0
        while last < spec.days and (block_orders == 0 or block_orders + per_day[last] <= ORDERS_PER_BLOCK):
            block_orders += int(per_day[last])
            last += 1
        counts = per_day[day:last]
        n = int(counts.sum())
        if n:
            day_index = np.repeat(np.arange(day, last), counts)
            seconds = rng.choice(24, n, p=hour_p) * 3600 + rng.integers(0, 3600, n)
            created = (np.datetime64(first_day) + day_index.astype("timedelta64[D]")).astype("datetime64[s]")
            created = np.sort(created + seconds.astype("timedelta64[s]"))
            user_idx = rng.choice(spec.users, n, p=user_p)
            item_idx = np.empty(n, dtype=np.int64)
            rich = affluent[user_idx]
            item_idx[rich] = rng.choice(spec.items, int(rich.sum()), p=premium_p)
            item_idx[~rich] = rng.choice(spec.items, int((~rich).sum()), p=regular_p)
            units = rng.choice(UNIT_CHOICES, n, p=UNIT_WEIGHTS)
            yield pd.DataFrame(
                {
                    "id": np.arange(next_id, next_id + n),
                    "user_id": user_idx + 1,
                    "item_id": item_idx + 1,
                    "item_count": units,
                    "amount": price_cents[item_idx] * units / 100,
                    "created_at": created,
                }
            )
            next_id += n
        day = last


def make_express(orders: pd.DataFrame, now: dt.datetime, rng: np.random.Generator) -> pd.DataFrame:
    """One shipment per order; its status follows from the order's age (delivered when old)."""
    n = len(orders)
    created = orders["created_at"].to_numpy().astype("datetime64[s]")
    shipped = created + rng.integers(2 * 3600, 30 * 3600, n).astype("timedelta64[s]")
    delivered = shipped + rng.integers(24 * 3600, 5 * 86400, n).astype("timedelta64[s]")
    in_transit = shipped + np.timedelta64(12 * 3600, "s")
    clock = np.datetime64(now, "s")
    status = np.select(
        [clock >= delivered, clock >= in_transit, clock >= shipped], ["delivered", "in_transit", "shipped"], "created"
    )
    updated = np.select(
        [clock >= delivered, clock >= in_transit, clock >= shipped], [delivered, in_transit, shipped], created
    )
    carrier_idx = rng.integers(0, len(CARRIERS), n)
    tracking = pd.Series(np.char.upper(np.char.replace(CARRIERS[carrier_idx], " ", ""))).str[:3] + pd.Series(
        rng.integers(10**9, 10**10, n)
    ).astype(str)
    ids = orders["id"].to_numpy()
    return pd.DataFrame(
        {
            "id": ids,
            "order_id": ids,
            "carrier": CARRIERS[carrier_idx],
            "tracking_no": tracking,
            "status": status,
            "shipped_at": pd.Series(shipped).where(clock >= shipped),
            "delivered_at": pd.Series(delivered).where(clock >= delivered),
            "updated_at": updated.astype("datetime64[s]"),
        }
    )


def generated_batches(spec: GenerateSpec, end_day: dt.date, now: dt.datetime) -> Iterator[tuple[str, pd.DataFrame]]:
    """The generated rows in load order, as (table, frame): users, items, then blocks of orders, each block
    followed by its expresses. The same spec, end day and clock give the same rows."""
    first_day = end_day - dt.timedelta(days=spec.days)
    rng = np.random.default_rng(spec.seed)
    pools = _Pools(spec.seed)
    for users in iter_users(spec, rng, pools, first_day):
        yield "users", users
    items = make_items(spec, rng, pools, first_day)
    yield "items", items
    for block in iter_orders(spec, rng, items, first_day):
        yield "orders", block
        yield "express", make_express(block, now, rng)


def generate(settings: Settings, spec: GenerateSpec, progress: Progress | None = None) -> GenerateResult:
    """Replace the business data with a generated history and record what was generated."""
    spec.validate()
    end_day = spec.end_day or settings.today()
    first_day = end_day - dt.timedelta(days=spec.days)
    report = progress or (lambda _table, _done, _total: None)
    cfg = settings.tidb
    now = settings.now()
    amount_cents = 0
    done = users_done = 0
    tables = {
        "users": f"`{cfg.database}`.users",
        "items": f"`{cfg.database}`.items",
        "orders": f"`{cfg.database}`.orders",
        "express": f"`{cfg.express_database}`.express",
    }
    names = {qualified: name for name, qualified in tables.items()}
    with tidb.connection(settings, cfg.database) as conn:
        tidb.require_schema(conn, cfg)
        allow_explicit_keys(conn)
        with conn.cursor() as cur:
            for table in ("dataset_info", "archive_purges", "orders", "users", "items"):
                cur.execute(f"TRUNCATE TABLE `{cfg.database}`.{table}")
            cur.execute(f"TRUNCATE TABLE `{cfg.express_database}`.express")
        # into empty tables, one sorted index build after the load beats maintaining the index row by row
        drop_secondary_indexes(conn, cfg.database, cfg.express_database)
        batches = ((tables[name], frame) for name, frame in generated_batches(spec, end_day, now))
        for table, frame in load_batches(conn, batches):
            name = names[table]
            if name == "users":
                users_done += len(frame)
                report(name, users_done, spec.users)
            elif name == "items":
                report(name, len(frame), spec.items)
            elif name == "orders":
                amount_cents += int(np.round(frame["amount"].to_numpy() * 100).sum())
                done += len(frame)
            else:
                report("orders", done, spec.orders)
                failpoints.hit("generate.between_batches")  # crash tests: some blocks loaded, the rest not
        build_secondary_indexes(conn, cfg.database, cfg.express_database)
        failpoints.hit("generate.before_dataset_info")  # every row loaded, nothing yet says the data is whole
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO `{cfg.database}`.dataset_info VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    spec.seed,
                    spec.users,
                    spec.items,
                    spec.orders,
                    spec.days,
                    first_day,
                    end_day - dt.timedelta(days=1),
                    now,
                ),
            )
    failpoints.hit("generate.before_run_log")  # the data is whole; the pipeline has not logged the run yet
    return GenerateResult(
        users=spec.users,
        items=spec.items,
        orders=done,
        express=done,
        first_day=first_day,
        last_day=end_day - dt.timedelta(days=1),
        amount=amount_cents / 100,
    )


def allow_explicit_keys(conn: pymysql.connections.Connection) -> None:
    """TiDB refuses explicit values for AUTO_RANDOM keys unless the session allows them."""
    if tidb.detect_flavor(conn).is_tidb:
        with conn.cursor() as cur:
            cur.execute("SET @@allow_auto_random_explicit_insert = true")


# The secondary indexes of the bulk-loaded tables as runner/sql creates them (a test checks they agree):
# (table, index, columns). Unique keys stay: they guard the load.
SECONDARY_INDEXES = (
    ("orders", "idx_orders_created_cover", "created_at, user_id, item_id, item_count, amount"),
    ("orders", "idx_orders_user_created", "user_id, created_at"),
    ("express", "idx_express_status_updated", "status, updated_at"),
)


def _present_indexes(cur: Any, database: str, table: str) -> set[str]:
    cur.execute(
        "SELECT DISTINCT index_name FROM information_schema.statistics WHERE table_schema = %s AND table_name = %s",
        (database, table),
    )
    return {row[0] for row in cur.fetchall()}


def _indexes_by_table(database: str, express_database: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for table, name, columns in SECONDARY_INDEXES:
        found.setdefault((express_database if table == "express" else database, table), []).append((name, columns))
    return found


def drop_secondary_indexes(conn: pymysql.connections.Connection, database: str, express_database: str) -> None:
    with conn.cursor() as cur:
        for (schema, table), indexes in _indexes_by_table(database, express_database).items():
            present = _present_indexes(cur, schema, table)
            drops = [f"DROP INDEX {name}" for name, _ in indexes if name in present]
            if drops:
                cur.execute(f"ALTER TABLE `{schema}`.{table} {', '.join(drops)}")


def build_secondary_indexes(conn: pymysql.connections.Connection, database: str, express_database: str) -> None:
    """Add the secondary indexes that are missing (also those a generate killed mid-load left out)."""
    with conn.cursor() as cur:
        for (schema, table), indexes in _indexes_by_table(database, express_database).items():
            present = _present_indexes(cur, schema, table)
            adds = [f"ADD INDEX {name} ({columns})" for name, columns in indexes if name not in present]
            if adds:
                cur.execute(f"ALTER TABLE `{schema}`.{table} {', '.join(adds)}")
