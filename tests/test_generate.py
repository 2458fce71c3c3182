"""The generators alone (no database): deterministic, realistic, consistent, bounded in memory; and the
preflight's estimates and checks, which need no database either."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loaders import generate as generate_mod
from loaders.generate import (
    GenerateSpec,
    _Pools,
    generated_batches,
    iter_orders,
    iter_users,
    make_express,
    make_items,
)
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError

END_DAY = dt.date(2026, 3, 1)
SPEC = GenerateSpec(users=5_000, items=800, orders=60_000, days=90, seed=7, end_day=END_DAY)
FIRST_DAY = END_DAY - dt.timedelta(days=SPEC.days)


def _history(spec: GenerateSpec = SPEC) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(spec.seed)
    pools = _Pools(spec.seed)
    users = pd.concat(list(iter_users(spec, rng, pools, FIRST_DAY)), ignore_index=True)
    items = make_items(spec, rng, pools, FIRST_DAY)
    orders = pd.concat(list(iter_orders(spec, rng, items, FIRST_DAY)), ignore_index=True)
    return users, items, orders


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _history()


def test_same_seed_same_rows(history: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    again = _history()
    for first, second in zip(history, again, strict=True):
        pd.testing.assert_frame_equal(first, second)
    other = _history(GenerateSpec(**{**SPEC.__dict__, "seed": 8}))
    assert not history[2]["user_id"].equals(other[2]["user_id"])


def test_orders_are_consistent(history: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, items, orders = history
    assert len(orders) == SPEC.orders
    assert orders["id"].tolist() == list(range(1, SPEC.orders + 1))
    assert orders["created_at"].is_monotonic_increasing
    assert orders["created_at"].min() >= pd.Timestamp(FIRST_DAY)
    assert orders["created_at"].max() < pd.Timestamp(END_DAY)
    assert set(orders["item_count"].unique()) == {1, 2, 3, 4}
    price_cents = (items.set_index("id")["price"] * 100).round().astype(int)
    expected = price_cents.loc[orders["item_id"]].to_numpy() * orders["item_count"].to_numpy()
    assert np.array_equal((orders["amount"] * 100).round().astype(int).to_numpy(), expected)
    assert orders["user_id"].between(1, SPEC.users).all() and orders["item_id"].between(1, SPEC.items).all()


def test_heavy_tails_and_rhythm(history: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, orders = history
    units = orders.groupby("item_id")["item_count"].sum().sort_values(ascending=False)
    top_items = units.head(len(units) // 20).sum() / units.sum()
    assert top_items > 0.25, f"the top 5% of items sell {top_items:.0%} of units: not heavy-tailed"
    spend = orders.groupby("user_id")["amount"].sum().sort_values(ascending=False)
    assert spend.head(len(spend) // 10).sum() / spend.sum() > 0.3
    by_hour = orders["created_at"].dt.hour.value_counts()
    assert by_hour[20] > 3 * by_hour[3], "evenings should be far busier than the small hours"
    by_day = orders.groupby(orders["created_at"].dt.date).size()
    assert len(by_day) == SPEC.days


def test_express_status_follows_age(history: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, orders = history
    now = dt.datetime.combine(END_DAY, dt.time(9))
    express = make_express(orders, now, np.random.default_rng(1))
    assert express["order_id"].tolist() == orders["id"].tolist()
    age_days = (pd.Timestamp(now) - orders["created_at"]).dt.total_seconds() / 86400
    assert (express.loc[age_days > 7, "status"] == "delivered").all()
    assert (express.loc[age_days < 2 / 24, "status"] == "created").all()
    recent = express.loc[age_days < 1, "status"]
    assert (recent != "delivered").all() and len(recent) > 0
    delivered = express["status"] == "delivered"
    assert express.loc[delivered, "delivered_at"].notna().all()
    assert express.loc[~delivered, "delivered_at"].isna().all()
    assert (express["updated_at"] >= orders["created_at"]).all()


def test_names_come_from_pools(history: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    users, items, _ = history
    assert users["email"].is_unique
    assert users["email"].str.fullmatch(r"[a-z.'\-]+\d+@[a-z.]+").all()
    assert items["name"].is_unique
    assert (items["price"] > 0).all()


@pytest.mark.parametrize("change", [{"users": 0}, {"orders": -5}, {"days": 10**10}, {"items": 1}, {"seed": -1}])
def test_bad_sizes_are_refused(change: dict[str, int]) -> None:
    with pytest.raises(EcomError):
        GenerateSpec(**{**SPEC.__dict__, **change}).validate()


def test_users_come_in_blocks_with_consecutive_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate_mod, "USERS_PER_BLOCK", 1_234)
    spec = GenerateSpec(users=5_000, items=10, orders=10, days=1, seed=3)
    blocks = list(iter_users(spec, np.random.default_rng(3), _Pools(3), FIRST_DAY))
    assert [len(b) for b in blocks] == [1_234, 1_234, 1_234, 1_234, 64]
    users = pd.concat(blocks, ignore_index=True)
    assert users["id"].tolist() == list(range(1, 5_001))
    assert users["email"].is_unique and users["email"].str.contains(r"^[a-z.'-]+\d+@", regex=True).all()


def _digest(spec: GenerateSpec) -> str:
    """Every generated row, in load order, hashed (the clock fixed: express status follows it)."""
    digest = hashlib.sha256()
    for table, frame in generated_batches(spec, END_DAY, dt.datetime(2026, 3, 1, 9)):
        digest.update(table.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("spec", "digest"),
    [
        (SPEC, "2df6f85bf50059ec"),
        (GenerateSpec(seed=42), "ccf3f6181d3269e0"),  # the default size
        (GenerateSpec(users=2_000, items=300, orders=20_000, days=30, seed=23), "def5eb392aaa55d2"),
    ],
)
def test_a_seed_gives_the_rows_it_always_gave(spec: GenerateSpec, digest: str) -> None:
    """Pinned before the draw tables were built once and big days were cut: a seed's data did not change."""
    assert _digest(spec) == digest


def test_drawing_from_a_prebuilt_table_is_numpys_choice() -> None:
    weights = np.random.default_rng(5).lognormal(0.0, 1.4, 10_000)
    p = weights / weights.sum()
    by_choice, by_table = np.random.default_rng(9), np.random.default_rng(9)
    cdf = generate_mod._cdf(weights.copy())
    for n in (0, 1, 1_000, 50_000):
        assert np.array_equal(by_choice.choice(len(p), n, p=p), generate_mod._draw(by_table, cdf, n))


@pytest.mark.parametrize("block", [1_000, 7])
def test_a_day_holding_more_than_a_block_is_cut(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Blocks never exceed ORDERS_PER_BLOCK (a day holding more was one block: memory grew with the orders);
    the ids still ascend with time, and the same seed gives the same rows. 7: one second holds more."""
    monkeypatch.setattr(generate_mod, "ORDERS_PER_BLOCK", block)
    spec = GenerateSpec(users=50, items=20, orders=20_000, days=3, seed=5)

    def blocks() -> list[pd.DataFrame]:
        rng = np.random.default_rng(spec.seed)
        items = make_items(spec, rng, _Pools(spec.seed), FIRST_DAY)
        return list(iter_orders(spec, rng, items, FIRST_DAY))

    cut = blocks()
    assert max(len(b) for b in cut) <= block
    orders = pd.concat(cut, ignore_index=True)
    assert orders["id"].tolist() == list(range(1, spec.orders + 1))
    assert orders["created_at"].is_monotonic_increasing
    assert orders["created_at"].dt.date.nunique() == spec.days
    by_hour = orders["created_at"].dt.hour.value_counts()
    assert by_hour[20] > 3 * by_hour[3], "the hourly rhythm holds in a cut day"
    pd.testing.assert_frame_equal(orders, pd.concat(blocks(), ignore_index=True))


MEASURE = """
import datetime as dt, resource, sys
from loaders.bulk import write_tsv
from loaders.generate import GenerateSpec, generated_batches
spec = GenerateSpec(users=int(sys.argv[1]), items=int(sys.argv[2]), orders=int(sys.argv[3]), days=1, seed=3)
for _, frame in generated_batches(spec, dt.date(2026, 3, 1), dt.datetime(2026, 3, 1, 9)):
    write_tsv(frame, sys.argv[4])  # as the loader renders each batch
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_the_memory_estimate_holds(tmp_path: Path) -> None:
    """A real run's peak resident memory stays within the estimate the preflight checks, and near it. Two
    million orders on one day: one block of them all took more than the estimate before days were cut."""
    users, items, orders = 3_000_000, 300_000, 2_000_000
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(users), str(items), str(orders), str(tmp_path / "batch.tsv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    peak = int(run.stdout.split()[-1])
    estimate = generate_mod.estimate_needs(GenerateSpec(users=users, items=items, orders=orders, days=1)).memory
    assert peak <= estimate, f"peak {peak / 2**20:.0f} MiB above the estimate {estimate / 2**20:.0f} MiB"
    assert estimate < 2.5 * peak, f"estimate {estimate / 2**20:.0f} MiB far above the peak {peak / 2**20:.0f} MiB"


def _remote(tmp_path: Path) -> Settings:
    """Settings for a TiDB Cloud host: nothing connects to it in these tests."""
    cloud = TiDBConfig(host="gateway01.eu-central-1.prod.aws.tidbcloud.com", port=4000)
    return Settings(tidb=cloud, home=tmp_path, profiles_dir=tmp_path, target="local")


def test_a_remote_servers_disk_is_not_checked_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    generate_mod._warn_disk_unchecked.cache_clear()
    assert generate_mod.server_datadir(_remote(tmp_path)) is None, "not asked: its disk is not this machine's"
    with caplog.at_level(logging.WARNING, logger="ecom"):
        needs = generate_mod.preflight(_remote(tmp_path), GenerateSpec(orders=10**10))
    assert needs.disk > 10**12
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "cannot check the free disk" in warning and "tidbcloud.com:4000" in warning and "TiB" in warning


def test_memory_is_checked_whatever_the_server(tmp_path: Path) -> None:
    with pytest.raises(EcomError, match="of memory") as refused:
        generate_mod.preflight(_remote(tmp_path), GenerateSpec(items=10**9))
    assert "nothing was changed" in str(refused.value) and "--items" in str(refused.value)


def test_what_scales() -> None:
    """Orders cost disk, not memory; users and items cost both."""
    small, many_orders = GenerateSpec(), GenerateSpec(orders=10**10)
    assert generate_mod.estimate_needs(many_orders).memory == generate_mod.estimate_needs(small).memory
    assert generate_mod.estimate_needs(many_orders).disk > 10**4 * generate_mod.estimate_needs(small).disk
    needs = generate_mod.Needs(memory=2**30, disk=2**40)
    assert generate_mod.fits(needs, 2**31, 2**41, "/data") == []
    assert generate_mod.fits(needs, None, None, None) == [], "what cannot be measured is not refused"
    (short,) = generate_mod.fits(needs, 2**29, 2**41, "/data")
    assert "1.0 GiB of memory" in short and "512.0 MiB available" in short
    (short,) = generate_mod.fits(needs, 2**31, 2**39, "/data")
    assert "1.0 TiB of disk" in short and "/data: 512.0 GiB free" in short
