"""Realistic business history, generated with numpy over small Faker pools and bulk-loaded into TiDB.

Deterministic for a seed: the same spec gives the same rows. Heavy tails where real shops have them:
a few items sell most units, a few users place most orders, and a minority of affluent users buy the
expensive items. Orders follow a weekly and an hourly rhythm and grow slowly over the period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymysql
from faker import Faker

from loaders.bulk import load_batches
from runner import failpoints, tidb, tiflash
from runner.config import Settings, TiDBConfig
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


def _cdf(weights: np.ndarray) -> np.ndarray:
    """In place: the cumulative table that `rng.choice(n, k, p=weights / weights.sum())` builds, to the bit.

    `choice` builds it anew at every call, beside `p`: for a billion users, 16 GB for each block of orders.
    Built once, it is drawn from with `_draw`, which takes the same random numbers and gives the same ids."""
    weights /= weights.sum()
    np.cumsum(weights, out=weights)
    weights /= weights[-1]
    return weights


def _draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """`rng.choice(len(cdf), n, p=p)` for the table `_cdf(p)`: numpy's own method, without rebuilding it."""
    return cdf.searchsorted(rng.random(n), side="right")


def _orders_per_day(spec: GenerateSpec, rng: np.random.Generator, first_day: dt.date) -> np.ndarray:
    days = np.arange(spec.days)
    weekday = (np.datetime64(first_day).astype("datetime64[D]").view("int64") + days + 3) % 7  # 1970-01-01 = Thu
    weights = WEEKDAY_WEIGHTS[weekday] * (1 + 0.4 * days / max(spec.days - 1, 1))
    return rng.multinomial(spec.orders, weights / weights.sum())


HOUR_P = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
Span = tuple[int, int, int]  # (first second of the day, seconds, orders in them)


def _spans(rng: np.random.Generator, start: int, length: int, orders: int) -> list[Span]:
    """[start, start + length) seconds of a day holding `orders`, cut until each span holds ORDERS_PER_BLOCK
    or fewer (or is one second): the day into hours by the hourly rhythm, an hour into minutes and a minute
    into seconds evenly; the same law as drawing each order's hour, then its second in the hour."""
    if orders <= ORDERS_PER_BLOCK or length == 1:
        return [(start, length, orders)]
    pieces = 24 if length == 86_400 else 60
    counts = rng.multinomial(orders, HOUR_P if pieces == 24 else np.full(60, 1 / 60))
    step = length // pieces
    return [span for i, n in enumerate(counts) if n for span in _spans(rng, start + i * step, step, int(n))]


def _day_parts(rng: np.random.Generator, orders: int) -> Iterator[list[Span]]:
    """A day holding more than ORDERS_PER_BLOCK orders as consecutive parts of up to that many, in time order."""
    part: list[Span] = []
    held = 0
    for start, length, n in _spans(rng, 0, 86_400, orders):
        if held + n > ORDERS_PER_BLOCK and part:
            yield part
            part, held = [], 0
        while n > ORDERS_PER_BLOCK:  # one second holding more than a block: parts of equal timestamps
            yield [(start, length, ORDERS_PER_BLOCK)]
            n -= ORDERS_PER_BLOCK
        part.append((start, length, n))
        held += n
    if part:
        yield part


def _time_blocks(per_day: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(day index, second of the day) of each order, in blocks of up to ORDERS_PER_BLOCK orders, the blocks in
    time order: whole days while they fit, and a day holding more than a block cut into consecutive parts.
    Lazily: a block's random numbers are drawn when it is asked for (after the previous block's expresses)."""
    day = 0
    while day < len(per_day):
        if per_day[day] > ORDERS_PER_BLOCK:
            for part in _day_parts(rng, int(per_day[day])):
                starts, lengths, counts = (np.array(column, dtype=np.int64) for column in zip(*part, strict=True))
                seconds = np.repeat(starts, counts) + rng.integers(0, np.repeat(lengths, counts))
                yield np.full(len(seconds), day), seconds
            day += 1
            continue
        last = day
        block_orders = 0
        while (
            last < len(per_day)
            and per_day[last] <= ORDERS_PER_BLOCK
            and (block_orders == 0 or block_orders + per_day[last] <= ORDERS_PER_BLOCK)
        ):
            block_orders += int(per_day[last])
            last += 1
        counts = per_day[day:last]
        n = int(counts.sum())
        if n:
            seconds = rng.choice(24, n, p=HOUR_P) * 3600 + rng.integers(0, 3600, n)
            yield np.repeat(np.arange(day, last), counts), seconds
        day = last


def iter_orders(
    spec: GenerateSpec, rng: np.random.Generator, items: pd.DataFrame, first_day: dt.date
) -> Iterator[pd.DataFrame]:
    """Orders in time order (ids ascending with time, as an auto-increment key gives), in blocks of up to
    ORDERS_PER_BLOCK. Of `items` only the price is read. Memory: 9 bytes a user and about 20 an item for the
    whole run (the tables orders are drawn from), besides the block."""
    per_day = _orders_per_day(spec, rng, first_day)
    # log-normal activity: the top 10% of users place about half the orders, nobody thousands
    user_cdf = _cdf(rng.lognormal(0.0, 1.4, spec.users))
    affluent = rng.random(spec.users) < AFFLUENT_SHARE
    price_cents = np.round(items["price"].to_numpy() * 100).astype(np.int64)
    relative_price = price_cents / np.median(price_cents)
    popularity = _zipf_weights(rng, spec.items, 1.05)
    premium_cdf = _cdf(popularity * relative_price**1.2)
    regular_cdf = _cdf(popularity * relative_price**-0.4)
    del relative_price, popularity
    next_id = 1
    for day_index, seconds in _time_blocks(per_day, rng):
        n = len(seconds)
        created = (np.datetime64(first_day) + day_index.astype("timedelta64[D]")).astype("datetime64[s]")
        created = np.sort(created + seconds.astype("timedelta64[s]"))
        user_idx = _draw(rng, user_cdf, n)
        item_idx = np.empty(n, dtype=np.int64)
        rich = affluent[user_idx]
        item_idx[rich] = _draw(rng, premium_cdf, int(rich.sum()))
        item_idx[~rich] = _draw(rng, regular_cdf, int((~rich).sum()))
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
    prices = items[["price"]]
    del items  # the names are loaded: only the prices are needed from here on
    for block in iter_orders(spec, rng, prices, first_day):
        yield "orders", block
        yield "express", make_express(block, now, rng)


# What a generate needs, checked before anything is written (`preflight`). Memory is this process's peak
# resident set (resource.getrusage), measured on this code, each rounded up by about a quarter: a whole
# generate of 10^5 and 10^6 orders peaked at 342 and 528 MiB; generating alone, 10^7 and 4 x 10^7 users
# 512 and 973 MiB (15.4 bytes a user), 4 x 10^6 and 1.6 x 10^7 items 1.7 and 6.2 GiB (390 bytes an item).
MEMORY_BASE = 600 * 2**20  # the interpreter and libraries, the Faker pools, blocks of users and orders in flight
MEMORY_PER_USER = 20  # the users' cumulative order table and affluence flags, held the whole run
MEMORY_PER_ITEM = 450  # the items frame (names as Python strings) and its rendering, all at once
# Disk the loaded rows take on the server with their indexes, per row: data_length + index_length after a
# generate of 10^6 orders and users on MariaDB 10.11 (InnoDB): users 97, items 79 (10^5 rows), orders 144,
# express 143 bytes; rounded up. TiDB's compressed storage takes less per replica.
DISK_PER_ROW = {"users": 100, "items": 100, "orders": 150, "express": 150}
DISK_MARGIN = 1.5  # sort files of the index builds, half-filled pages, the redo log
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("ecom")


@dataclass(frozen=True)
class Needs:
    memory: int  # bytes this process holds at its peak
    disk: int  # bytes the new tables take on the server, beside the live ones until the swap


def estimate_needs(spec: GenerateSpec) -> Needs:
    """What a generate of `spec` needs. What scales is known: the users' and items' draw tables and the items
    frame are held whole; users, orders and expresses go in blocks of at most USERS_PER_BLOCK and
    ORDERS_PER_BLOCK, whatever the size (a day holding more orders is cut), so orders cost only disk."""
    memory = MEMORY_BASE + MEMORY_PER_USER * spec.users + MEMORY_PER_ITEM * spec.items
    rows = {"users": spec.users, "items": spec.items, "orders": spec.orders, "express": spec.orders}
    disk = DISK_MARGIN * sum(DISK_PER_ROW[table] * n for table, n in rows.items())
    return Needs(memory=int(memory), disk=int(disk))


def available_memory() -> int | None:
    """Bytes this process can still take: MemAvailable, or less under a cgroup limit (a container)."""
    found = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        with contextlib.suppress(OSError, ValueError):
            found.append(int(Path(limit).read_text()) - int(Path(usage).read_text()))  # "max": no limit
    if not found:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def server_datadir(settings: Settings) -> str | None:
    """The server's data directory when the server runs on this machine (a local address, and @@datadir is a
    directory here), else None: a remote server's disk cannot be measured from here (nor is it asked)."""
    cfg = settings.tidb
    if cfg.host.lower() not in LOCAL_HOSTS:
        return None
    with tidb.connection(settings, cfg.database) as conn, conn.cursor(pymysql.cursors.Cursor) as cur:
        datadir = str(tidb.scalar(cur, "SELECT @@datadir") or "")
    return datadir if datadir and os.path.isdir(datadir) else None  # TiDB says its PD address, or a path in TiKV


def free_disk(path: str) -> int:
    return shutil.disk_usage(path).free


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""  # unreachable


def fits(needs: Needs, memory: int | None, disk: int | None, datadir: str | None) -> list[str]:
    """What the machine lacks for `needs` (empty: it fits), one phrase per resource."""
    short = []
    if memory is not None and needs.memory > memory:
        short.append(f"about {_size(needs.memory)} of memory (this machine has {_size(memory)} available)")
    if disk is not None and needs.disk > disk:
        short.append(
            f"about {_size(needs.disk)} of disk where the server keeps its data ({datadir}: {_size(disk)} free)"
        )
    return short


@functools.cache
def _warn_disk_unchecked(address: str, needed: int) -> None:
    log.warning(
        "generate: cannot check the free disk of TiDB at %s from here (not this machine); the new dataset needs "
        "about %s there, beside the current one until it is swapped in",
        address,
        _size(needed),
    )


def preflight(settings: Settings, spec: GenerateSpec) -> Needs:
    """Refuse, before anything is written, a run this machine cannot finish: the memory this process will
    need, and the disk the new tables will take on the server when it runs here (a remote server's disk
    cannot be seen from here: a warning line says so)."""
    spec.validate()
    needs = estimate_needs(spec)
    datadir = server_datadir(settings)
    disk = free_disk(datadir) if datadir else None
    if datadir is None:
        _warn_disk_unchecked(f"{settings.tidb.host}:{settings.tidb.port}", needs.disk)
    short = fits(needs, available_memory(), disk, datadir)
    if short:
        sizes = f"{spec.users:,} users, {spec.items:,} items and {spec.orders:,} orders"
        raise EcomError(
            f"generating {sizes} needs {' and '.join(short)}; nothing was changed",
            "generate a smaller history (lower --orders, --users or --items), or run it where there is room",
        )
    return needs


# The tables a generate replaces, each as (database, table): it loads `<table>__gen` beside each, then swaps
# them all in with one RENAME TABLE (see `generate`).
def replaced_tables(cfg: TiDBConfig) -> list[tuple[str, str]]:
    business = ("users", "items", "orders", "dataset_info", "archive_purges")
    return [(cfg.database, table) for table in business] + [(cfg.express_database, "express")]


SIDE, OLD = "__gen", "__old"


def _name(database: str, table: str, suffix: str = "") -> str:
    return f"`{database}`.`{table}{suffix}`"


def generate(
    settings: Settings,
    spec: GenerateSpec,
    progress: Progress | None = None,
    before_swap: Callable[[], None] | None = None,
) -> GenerateResult:
    """Replace the business data with a generated history, whole or not at all.

    Everything is loaded into side tables (`users__gen`, …, with `dataset_info__gen`, the completeness record,
    written last), which one RENAME TABLE then swaps in for the live ones: until that statement, the previous
    dataset is untouched, whatever happens to this run. `before_swap` runs right before it (the pipeline drops
    the warehouse archive there, which describes the rows about to go). A killed run's side tables are swept
    by the next one."""
    spec.validate()
    preflight(settings, spec)
    end_day = spec.end_day or settings.today()
    first_day = end_day - dt.timedelta(days=spec.days)
    now = settings.now()
    cfg = settings.tidb
    with tidb.connection(settings, cfg.database) as conn:
        tidb.require_schema(conn, cfg)
        allow_explicit_keys(conn)
        _prepare_side_tables(conn, cfg)
        try:
            orders, amount_cents = _load(conn, cfg, spec, end_day, now, progress)
            with tidb.patient(conn):  # index builds answer once done
                build_secondary_indexes(conn, cfg.database, cfg.express_database, SIDE)
            failpoints.hit("generate.before_dataset_info")  # every row loaded, nothing yet says the data is whole
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {_name(cfg.database, 'dataset_info', SIDE)} "
                    "VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            failpoints.hit("generate.before_swap")  # the new dataset whole beside the live one, nothing replaced yet
            if before_swap is not None:
                before_swap()
        except BaseException:
            # the load failed (a kill skips this: the next run sweeps); the live dataset was never touched.
            # A failed DROP (the connection gone) must not hide why we got here.
            with contextlib.suppress(Exception), tidb.patient(conn), conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {', '.join(_name(db, t, SIDE) for db, t in replaced_tables(cfg))}")
            raise
        # DDL below answers once done (a RENAME after readers' metadata locks, DROPs of big tables)
        with tidb.patient(conn):
            _swap(conn, settings)
            failpoints.hit("generate.after_swap")  # the new dataset live, the previous one in the `__old` tables
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {', '.join(_name(db, t, OLD) for db, t in replaced_tables(cfg))}")
            # a table swapped in is another table: on TiDB it keeps the replica CREATE TABLE ... LIKE copied
            tiflash.ensure_replicas(conn, cfg, tidb.detect_flavor(conn).is_tidb)
    failpoints.hit("generate.before_run_log")  # the data is whole; the pipeline has not logged the run yet
    return GenerateResult(
        users=spec.users,
        items=spec.items,
        orders=orders,
        express=orders,
        first_day=first_day,
        last_day=end_day - dt.timedelta(days=1),
        amount=amount_cents / 100,
    )


def _prepare_side_tables(conn: pymysql.connections.Connection, cfg: TiDBConfig) -> None:
    """Empty side tables shaped like the live ones, without their secondary indexes (one sorted build after
    the load beats maintaining them row by row); a killed run's `__gen` and `__old` tables go first."""
    leftovers = [_name(db, t, suffix) for db, t in replaced_tables(cfg) for suffix in (SIDE, OLD)]
    with tidb.patient(conn), conn.cursor() as cur:  # DDL: answers once done
        cur.execute(f"DROP TABLE IF EXISTS {', '.join(leftovers)}")
        for db, table in replaced_tables(cfg):
            cur.execute(f"CREATE TABLE {_name(db, table, SIDE)} LIKE {_name(db, table)}")
        drop_secondary_indexes(conn, cfg.database, cfg.express_database, SIDE)


def _load(
    conn: pymysql.connections.Connection,
    cfg: TiDBConfig,
    spec: GenerateSpec,
    end_day: dt.date,
    now: dt.datetime,
    progress: Progress | None,
) -> tuple[int, int]:
    """Stream the generated rows into the side tables; the orders loaded, and their amount in cents."""
    report = progress or (lambda _table, _done, _total: None)
    names = {
        table: _name(cfg.express_database if table == "express" else cfg.database, table, SIDE)
        for table in ("users", "items", "orders", "express")
    }
    tables = {qualified: name for name, qualified in names.items()}
    amount_cents = done = users_done = 0
    batches = ((names[name], frame) for name, frame in generated_batches(spec, end_day, now))
    for table, frame in load_batches(conn, batches):
        name = tables[table]
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
    return done, amount_cents


def _swap(conn: pymysql.connections.Connection, settings: Settings) -> None:
    """Every side table in for its live one, in one RENAME TABLE: atomic on MySQL, MariaDB and TiDB (which
    renames several tables, across databases, in one DDL job), so readers see the old dataset or the new."""
    pairs = [
        f"{_name(db, t)} TO {_name(db, t, OLD)}, {_name(db, t, SIDE)} TO {_name(db, t)}"
        for db, t in replaced_tables(settings.tidb)
    ]
    with conn.cursor() as cur:
        # on MySQL/MariaDB the swap waits for readers' metadata locks (a stream's open transaction) for half a
        # lease at most, not the default day; TiDB ignores lock_wait_timeout (a no-op variable there)
        cur.execute(f"SET SESSION lock_wait_timeout = {max(1, settings.lock_lease_seconds // 2)}")
        cur.execute(f"RENAME TABLE {', '.join(pairs)}")


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


def drop_secondary_indexes(
    conn: pymysql.connections.Connection, database: str, express_database: str, suffix: str = ""
) -> None:
    """Drop the secondary indexes of the bulk-loaded tables (of `<table><suffix>`)."""
    with conn.cursor() as cur:
        for (schema, table), indexes in _indexes_by_table(database, express_database).items():
            present = _present_indexes(cur, schema, table + suffix)
            drops = [f"DROP INDEX {name}" for name, _ in indexes if name in present]
            if drops:
                cur.execute(f"ALTER TABLE {_name(schema, table, suffix)} {', '.join(drops)}")


def build_secondary_indexes(
    conn: pymysql.connections.Connection, database: str, express_database: str, suffix: str = ""
) -> None:
    """Add the secondary indexes that are missing (of `<table><suffix>`)."""
    with conn.cursor() as cur:
        for (schema, table), indexes in _indexes_by_table(database, express_database).items():
            present = _present_indexes(cur, schema, table + suffix)
            adds = [f"ADD INDEX {name} ({columns})" for name, columns in indexes if name not in present]
            if adds:
                cur.execute(f"ALTER TABLE {_name(schema, table, suffix)} {', '.join(adds)}")


def missing_secondary_indexes(conn: pymysql.connections.Connection, database: str, express_database: str) -> list[str]:
    """The secondary indexes the live tables lack, as `table.index`: an earlier version of `generate` dropped
    them on the live tables while it loaded, and a run killed mid-load left them out."""
    missing = []
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        for (schema, table), indexes in _indexes_by_table(database, express_database).items():
            present = _present_indexes(cur, schema, table)
            missing += [f"{table}.{name}" for name, _ in indexes if name not in present]
    return missing
