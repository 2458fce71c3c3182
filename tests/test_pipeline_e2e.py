"""The whole pipeline on small data, checked against expectations computed here in Python from the rows
that were generated: labels, tiers, ranks with ties, bills, the monthly summary and today's figures."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from loaders.generate import GenerateSpec
from loaders.stream import StreamSpec, stream
from runner import dbt, pipeline, serving, tidb
from runner.config import DBT_PROJECT_DIR, Settings, TiDBConfig
from tests.conftest import drop_databases, make_settings

pytestmark = pytest.mark.e2e
SPEC = GenerateSpec(users=3_000, items=300, orders=30_000, days=75, seed=11)


@pytest.fixture(scope="module")
def run(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("e2e")), "e2e")
    today = settings.today()
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    _make_a_tie(settings, today)
    pipeline.run_archive(settings, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
    pipeline.run_transform(settings, today)
    pipeline.run_export(settings)
    stream(settings, StreamSpec(rate=15, duration=2.5, seed=3))
    yield settings
    drop_databases(settings)


def _rows(settings: Settings, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _make_a_tie(settings: Settings, today: dt.date) -> None:
    """Give the two cheapest items the same units yesterday, enough to lead the low tier, so rank order
    between them is decided by the tie rule alone (smaller item id first)."""
    (top_units,) = _rows(
        settings,
        "SELECT COALESCE(MAX(u), 0) FROM (SELECT SUM(item_count) u FROM orders "
        "WHERE created_at >= %s AND created_at < %s GROUP BY item_id) t",
        (today - dt.timedelta(days=7), today),
    )[0]
    cheapest = _rows(settings, "SELECT id, price FROM items ORDER BY price, id LIMIT 2")
    noon = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(12))
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        for item_id, price in cheapest:
            (sold,) = _rows(
                settings,
                "SELECT COALESCE(SUM(item_count), 0) FROM orders WHERE item_id = %s "
                "AND created_at >= %s AND created_at < %s",
                (item_id, today - dt.timedelta(days=7), today),
            )[0]
            extra = int(top_units) + 50 - int(sold)
            for _ in range(extra // 4):
                cur.execute(
                    "INSERT INTO orders (user_id, item_id, item_count, amount, created_at) VALUES (1, %s, 4, %s, %s)",
                    (item_id, price * 4, noon),
                )
            for _ in range(extra % 4):
                cur.execute(
                    "INSERT INTO orders (user_id, item_id, item_count, amount, created_at) VALUES (1, %s, 1, %s, %s)",
                    (item_id, price, noon),
                )
            cur.execute(
                f"INSERT INTO `{settings.tidb.express_database}`.express (order_id, carrier, tracking_no, "
                f"status, updated_at) SELECT o.id, 'EMS', CONCAT('EMS', o.id), 'created', o.created_at "
                f"FROM orders o LEFT JOIN `{settings.tidb.express_database}`.express e ON e.order_id = o.id "
                f"WHERE e.id IS NULL"
            )


def _history(settings: Settings) -> list[tuple[int, int, int, int, dt.datetime]]:
    today = settings.today()
    return [
        (int(u), int(i), int(n), int(Decimal(a) * 100), c)
        for u, i, n, a, c in _rows(
            settings,
            "SELECT user_id, item_id, item_count, amount, created_at FROM orders WHERE created_at < %s",
            (today,),
        )
    ]


def test_labels_follow_the_average_of_all_orders(run: Settings) -> None:
    orders = _history(run)
    total = sum(o[3] for o in orders)
    overall = Fraction(total, len(orders))
    per_user: dict[int, list[int]] = defaultdict(list)
    for user, _, _, cents, _ in orders:
        per_user[user].append(cents)
    expected = {u: "high" if Fraction(sum(c), len(c)) > overall else "low" for u, c in per_user.items()}
    got = dict(_rows(run, "SELECT user_id, user_label FROM user_labels"))
    assert got == expected
    assert 0 < sum(v == "high" for v in got.values()) < len(got)
    # the wrong rule (average of user averages) would label differently: the fixture tells them apart
    mean_of_means = sum(Fraction(sum(c), len(c)) for c in per_user.values()) / len(per_user)
    wrong = {u: "high" if Fraction(sum(c), len(c)) > mean_of_means else "low" for u, c in per_user.items()}
    assert wrong != expected


def test_hot_items_tiers_ranks_and_ties(run: Settings) -> None:
    today = run.today()
    window_start = dt.datetime.combine(today - dt.timedelta(days=7), dt.time())
    prices = {int(i): int(Decimal(p) * 100) for i, p in _rows(run, "SELECT id, price FROM items")}
    threshold = Fraction(sum(prices.values()), len(prices))
    units: dict[int, int] = defaultdict(int)
    for _, item, count, _, created in _history(run):
        if created >= window_start:
            units[item] += count
    expected = []
    for label in ("high", "low"):
        tier = [i for i in units if (prices[i] > threshold) == (label == "high")]
        ranked = sorted(tier, key=lambda i: (-units[i], i))[:10]
        expected += [(label, rank, item, units[item]) for rank, item in enumerate(ranked, start=1)]
    got = _rows(run, "SELECT item_label, `rank`, item_id, units_sold FROM hot_items ORDER BY item_label, `rank`")
    assert [(lbl, int(r), int(i), int(u)) for lbl, r, i, u in got] == expected
    assert sum(1 for g in got if g[0] == "high") == 10 and sum(1 for g in got if g[0] == "low") == 10
    low = [row for row in got if row[0] == "low"]
    assert low[0][3] == low[1][3] and low[0][2] < low[1][2], "the forced tie must be broken by item id"


def test_monthly_bills_and_summary(run: Settings) -> None:
    bills: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for user, _, count, cents, created in _history(run):
        bill = bills[(user, created.strftime("%Y-%m"))]
        bill[0] += 1
        bill[1] += count
        bill[2] += cents
    got = {
        (int(u), m): [int(o), int(n), int(Decimal(a) * 100)]
        for u, m, o, n, a in _rows(run, "SELECT user_id, month, order_count, units, total_amount FROM monthly_bills")
    }
    assert got == dict(bills)
    assert len({month for _, month in got}) >= 3
    summary = _rows(
        run,
        "SELECT month, total_amount, order_count, buyer_count, avg_bill_per_buyer FROM monthly_spending ORDER BY month",
    )
    for month, amount, count, buyers, avg_bill in summary:
        rows = [v for (u, m), v in bills.items() if m == month]
        assert int(Decimal(amount) * 100) == sum(r[2] for r in rows)
        assert int(count) == sum(r[0] for r in rows) and int(buyers) == len(rows)
        assert abs(Decimal(avg_bill) - Decimal(sum(r[2] for r in rows)) / 100 / len(rows)) <= Decimal("0.005")


def test_todays_figures_come_from_live_orders(run: Settings) -> None:
    today = run.today()
    live = _rows(
        run,
        "SELECT o.user_id, o.amount, i.item_type FROM orders o JOIN items i ON i.id = o.item_id "
        "WHERE o.created_at >= %s",
        (today,),
    )
    assert live, "the stream wrote no orders for today"
    (total, count, customers) = _rows(run, "SELECT total_amount, order_count, customer_count FROM today_sales")[0]
    assert (Decimal(total), int(count), int(customers)) == (
        sum(Decimal(a) for _, a, _ in live),
        len(live),
        len({u for u, _, _ in live}),
    )
    by_type: dict[str, Decimal] = defaultdict(Decimal)
    for _, amount, item_type in live:
        by_type[item_type] += Decimal(amount)
    assert dict(_rows(run, "SELECT item_type, total_amount FROM today_sales_by_type")) == dict(by_type)
    tables = serving.dashboard(run)
    assert tables[0].rows[0][2] == len(live)


def test_recommendations_serve_the_users_tier(run: Settings) -> None:
    users = serving.sample_users(run)
    assert set(users) == {"high", "low"}
    for label, user_id in users.items():
        table = serving.recommend(run, user_id)
        tier = _rows(run, "SELECT item_id FROM hot_items WHERE item_label = %s ORDER BY `rank`", (label,))
        assert [row[1] for row in table.rows] == [t[0] for t in tier]
        assert f"labelled '{label}'" in table.note
    (unlabelled,) = _rows(
        run, "SELECT MIN(u.id) FROM users u LEFT JOIN user_labels l ON l.user_id = u.id WHERE l.user_id IS NULL"
    )[0]
    table = serving.recommend(run, int(unlabelled))
    assert "no label yet" in table.note
    low = _rows(run, "SELECT item_id FROM hot_items WHERE item_label = 'low' ORDER BY `rank`")
    assert [row[1] for row in table.rows] == [t[0] for t in low]


def test_orders_show_live_express_status(run: Settings) -> None:
    (user_id,) = _rows(run, "SELECT user_id FROM orders ORDER BY created_at DESC, id DESC LIMIT 1")[0]
    table = serving.orders(run, int(user_id), limit=5)
    assert table.rows, "the newest order's user has no orders listed"
    times = [row[1] for row in table.rows]
    assert times == sorted(times, reverse=True)
    assert all(row[6] in {"created", "shipped", "in_transit", "delivered"} for row in table.rows)


def test_rerunning_archive_and_export_changes_nothing(run: Settings) -> None:
    before = {t: _rows(run, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("user_labels", "hot_items", "monthly_bills")}
    yesterday = run.today() - dt.timedelta(days=1)
    first = pipeline.run_archive(run, yesterday, yesterday)
    again = pipeline.run_archive(run, yesterday, yesterday)
    assert (first.orders, first.amount) == (again.orders, again.amount)
    pipeline.run_export(run)
    after = {t: _rows(run, f"SELECT COUNT(*) FROM {t}")[0][0] for t in before}
    assert after == before
    leftovers = _rows(
        run,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND (table_name LIKE '%%\\_\\_new' OR table_name LIKE '%%\\_\\_old')",
        (run.tidb.database,),
    )
    assert leftovers == []


def test_status_reports_both_sides(run: Settings) -> None:
    from runner.status import status_tables

    connections, counts, steps = status_tables(run)
    assert [row[0] for row in connections.rows] == ["TiDB side", "warehouse"]
    rows = {table: n for _, table, n in counts.rows}
    assert rows["RAW.ORDERS"] and rows["ANALYTICS.DIM_USER_LABELS"] == rows[f"{run.tidb.database}.user_labels"]
    assert {step for step, finished, _ in steps.rows if finished != "—"} >= {"generate", "archive", "transform"}


def test_view_survives_export_swap(run: Settings) -> None:
    with pytest.raises(pymysql.err.MySQLError):
        _rows(run, "SELECT * FROM user_labels__old")
    assert _rows(run, "SELECT COUNT(*) FROM recommendations")[0][0] > 0


def test_transform_refuses_a_hole_in_the_week(run: Settings) -> None:
    from runner.errors import EcomError

    as_of = run.today() + dt.timedelta(days=2)  # today and tomorrow are not archived
    with pytest.raises(EcomError, match=r"2 of the 7 days before .* are not archived") as failure:
        pipeline.require_archive(run, as_of)
    assert f"--from {run.today()} --to {run.today() + dt.timedelta(days=1)}" in failure.value.fix
    pipeline.require_archive(run, run.today())  # the demo's own as-of date is complete


def test_dbt_unit_tests_pass(run: Settings) -> None:
    """The daily transform leaves the unit tests (the models' logic) out: they run here, on the built models."""
    outcome = dbt.run(run, ["test", "--select", "test_type:unit"], run.today(), quiet=True)
    unit_tests = [node for node, _ in outcome.results if node.startswith("unit_test.")]
    assert outcome.success and not outcome.failures, outcome.failures
    defined = [
        test["name"]
        for path in (DBT_PROJECT_DIR / "models").rglob("*.yml")
        for test in (yaml.safe_load(path.read_text()) or {}).get("unit_tests", [])
    ]
    assert defined and sorted(node.rsplit(".", 1)[1] for node in unit_tests) == sorted(defined)
    ran = [node for node, _ in outcome.results if not node.startswith("operation.")]  # not the on-run-start hook
    assert len(unit_tests) == len(ran)
