"""The generators alone (no database): deterministic, realistic, consistent."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from loaders import generate as generate_mod
from loaders.generate import GenerateSpec, _Pools, iter_orders, iter_users, make_express, make_items
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
