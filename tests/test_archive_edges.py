"""The warehouse is the copy of record: a re-archive never silently removes archived rows; verify covers the
days archived (however far apart) and never calls a day that was not archived "equal"."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from loaders import verify
from loaders.archive import EARLIEST_DAY
from loaders.generate import GenerateSpec
from runner import pipeline, tidb
from runner.config import Settings, TiDBConfig
from tests.conftest import generated_shop, run_ecom
from tests.test_archive_safety import raw_rows, tidb_rows

SPEC = GenerateSpec(users=300, items=40, orders=2_000, days=10, seed=11)


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with generated_shop(server, tmp_path_factory, "edges", SPEC) as settings:
        pipeline.run_archive(settings, *history(settings))
        yield settings


def history(settings: Settings) -> tuple[dt.date, dt.date]:
    today = settings.today()
    return today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1)


def one_line(run: object) -> str:
    stderr = getattr(run, "stderr", "")
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr, stderr
    return str(stderr)


def test_days_before_the_earliest_day_are_refused(shop: Settings) -> None:
    for day in ("0001-01-01", str(EARLIEST_DAY - dt.timedelta(days=1))):
        run = run_ecom(shop, "archive", "--date", day)
        assert run.returncode == 1 and f"before {EARLIEST_DAY}" in one_line(run), run.stderr
    run = run_ecom(shop, "archive", "--date", str(EARLIEST_DAY + dt.timedelta(days=2)), "--recheck-days", "3")
    assert run.returncode == 1 and "--recheck-days 3 reaches back before" in one_line(run), run.stderr


def test_a_far_day_archived_does_not_break_verify(shop: Settings) -> None:
    """One day archived decades before the rest: a plain verify checks the days archived, not every day between."""
    first, last = history(shop)
    run = run_ecom(shop, "archive", "--date", str(EARLIEST_DAY))
    assert run.returncode == 0, run.stderr
    run = run_ecom(shop, "verify", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout)
    summary = summary[0] if isinstance(summary, list) else summary
    checks = {row["table"]: row["checks"] for row in summary["rows"]}
    days = (last - first).days + 1 + 1  # the history and the far day
    assert checks == {"ORDERS": days, "EXPRESS": days, "USERS": 1, "ITEMS": 1}, checks


def test_days_never_archived_are_not_equal(shop: Settings) -> None:
    first, last = history(shop)
    before = first - dt.timedelta(days=3)  # no orders in TiDB, never archived
    report = verify.verify(shop, before, last, daily_only=True)
    never = {c.day for c in report.checks if c.state == verify.NOT_ARCHIVED}
    assert never == {before + dt.timedelta(days=d) for d in range(3)}
    assert not report.ok and report.stale_days() == [], "no orders there: nothing a recheck would archive"
    run = run_ecom(shop, "verify", "--from", str(before), "--to", str(last))
    assert run.returncode == 1 and "not archived" in run.stdout, run.stdout
    assert f"--from {before} --to {before + dt.timedelta(days=2)}" in one_line(run)


def _orders_of(settings: Settings, day: dt.date) -> list[int]:
    start = dt.datetime.combine(day, dt.time())
    rows = tidb_rows(
        settings,
        "SELECT id FROM orders WHERE created_at >= %s AND created_at < %s ORDER BY id",
        (start, start + dt.timedelta(days=1)),
    )
    return [int(row[0]) for row in rows]


def _delete_orders(settings: Settings, ids: list[int]) -> None:
    marks = ", ".join(["%s"] * len(ids))
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM `{settings.tidb.express_database}`.express WHERE order_id IN ({marks})", ids)
        cur.execute(f"DELETE FROM orders WHERE id IN ({marks})", ids)


def _raw_day(settings: Settings, day: dt.date) -> list[tuple[object, ...]]:
    return raw_rows(settings, "SELECT ID, ARCHIVED_AT FROM ORDERS WHERE ORDER_DATE = %s ORDER BY ID", (day,))


def test_a_recheck_never_removes_archived_rows_unless_asked(shop: Settings) -> None:
    first, last = history(shop)
    day = last - dt.timedelta(days=3)
    archived = _raw_day(shop, day)
    lost = _orders_of(shop, day)[:3]
    _delete_orders(shop, lost)  # TiDB lost three of the day's orders (by hand, a bug, a TTL)
    latest = raw_rows(shop, "SELECT MAX(ARCHIVED_AT) FROM ARCHIVE_LOG")

    run = run_ecom(shop, "archive", "--date", str(last), "--recheck-days", "5")
    line = one_line(run)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"archiving {day} again would remove at least 3 of its {len(archived)} archived orders rows" in line
    assert f"TiDB now holds {len(archived) - 3}" in line and "--allow-removal" in line
    assert _raw_day(shop, day) == archived and raw_rows(shop, "SELECT MAX(ARCHIVED_AT) FROM ARCHIVE_LOG") == latest

    run = run_ecom(shop, "archive", "--date", str(day))  # the day itself, named: refused the same way
    assert run.returncode == 1 and f"remove 3 of its {len(archived)} archived orders rows" in one_line(run)

    # three new orders that day: TiDB holds as many rows as were archived, yet three archived ones are gone
    with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
        for _ in lost:
            cur.execute(
                "INSERT INTO orders (user_id, item_id, item_count, amount, created_at) VALUES (1, 1, 1, 1.00, %s)",
                (dt.datetime.combine(day, dt.time(12)),),
            )
            cur.execute(
                f"INSERT INTO `{shop.tidb.express_database}`.express (order_id, carrier, tracking_no, status, "
                "updated_at) VALUES (%s, 'SF', %s, 'created', NOW())",
                (cur.lastrowid, f"SF{cur.lastrowid}"),
            )
    assert len(_orders_of(shop, day)) == len(archived)
    for args in (["--date", str(day)], ["--date", str(last), "--recheck-days", "5"]):
        run = run_ecom(shop, "archive", *args)  # checked row by row, by id, not by counts
        assert run.returncode == 1 and f"remove 3 of its {len(archived)} archived orders rows" in one_line(run)
    assert _raw_day(shop, day) == archived

    run = run_ecom(shop, "archive", "--date", str(last), "--recheck-days", "5", "--allow-removal")
    assert run.returncode == 0, run.stderr
    assert [row[0] for row in _raw_day(shop, day)] == _orders_of(shop, day), "replaced, as asked"
    assert verify.verify(shop, first, last).ok
