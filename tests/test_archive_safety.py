"""Nothing lost, nothing doubled: the archive killed at every step, rerun and reconciled; late rows,
midnight, a concurrent writer, a second archive, a dropped connection and the cold purge."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from loaders import archive, verify
from loaders.generate import GenerateSpec
from loaders.stream import StreamSpec, stream
from runner import lease, pipeline, retry, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, env_for, make_settings, run_ecom

SPEC = GenerateSpec(users=1_500, items=200, orders=12_000, days=20, seed=5)
CRASH_POINTS = ["archive.between_batches", "archive.after_stage", "archive.before_log_rows", "archive.after_publish"]


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("safety")), "safe")
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    pipeline.run_archive(settings, *history(settings))
    yield settings
    drop_databases(settings)


def history(settings: Settings) -> tuple[dt.date, dt.date]:
    today = settings.today()
    return today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1)


def tidb_rows(settings: Settings, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def raw_rows(settings: Settings, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            conn.close()


def add_order(settings: Settings, at: dt.datetime, amount: str = "12.34") -> int:
    """A new order with its express row, committed now but stamped `at`."""
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO orders (user_id, item_id, item_count, amount, created_at) VALUES (7, 3, 1, %s, %s)",
            (amount, at),
        )
        order_id = int(cur.lastrowid)
        cur.execute(
            f"INSERT INTO `{settings.tidb.express_database}`.express (order_id, carrier, tracking_no, status, "
            "updated_at) VALUES (%s, 'SF', %s, 'created', %s)",
            (order_id, f"SF{order_id}", at),
        )
    return order_id


def assert_whole(settings: Settings, first: dt.date, last: dt.date) -> None:
    """Nothing lost, nothing doubled: verify finds every day equal, RAW keys are unique, the log agrees."""
    report = verify.verify(settings, first, last)
    assert report.ok, [c for c in report.checks if not c.ok]
    for table, key in (("ORDERS", "ID"), ("EXPRESS", "ORDER_ID")):
        ((rows, keys),) = raw_rows(settings, f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM {table}")
        assert rows == keys, f"{table} holds {rows - keys} doubled rows"
    logged = raw_rows(
        settings,
        "SELECT l.ARCHIVE_DATE, l.ROW_COUNT, COUNT(o.ID) FROM ARCHIVE_LOG l LEFT JOIN ORDERS o "
        "ON o.ORDER_DATE = l.ARCHIVE_DATE WHERE l.TABLE_NAME = 'ORDERS' "
        "GROUP BY 1, 2 HAVING l.ROW_COUNT <> COUNT(o.ID)",
    )
    assert logged == [], f"log rows that disagree with the data: {logged}"
    stages = raw_rows(
        settings,
        f"SELECT table_name FROM {settings.warehouse().database}.information_schema.tables "
        "WHERE table_name LIKE '%STAGE%'",
    )
    assert stages == []


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_archive_killed_then_rerun_loses_and_doubles_nothing(shop: Settings, point: str) -> None:
    first, last = history(shop)
    # the killed run's new content, in its first week: each week of a range commits on its own
    late_day = first + dt.timedelta(days=2)
    late_id = add_order(shop, dt.datetime.combine(late_day, dt.time(13, 0)))
    before = raw_rows(shop, "SELECT COUNT(*) FROM ORDERS")[0][0]

    killed = run_ecom(shop, "archive", "--from", str(first), "--to", str(last), ECOM_FAILPOINT=point)
    assert killed.returncode == -9, killed.stderr

    holds_late = raw_rows(shop, "SELECT COUNT(*) FROM ORDERS WHERE ID = %s", (late_id,))[0][0]
    after_kill = raw_rows(shop, "SELECT COUNT(*) FROM ORDERS")[0][0]
    if point == "archive.after_publish":  # committed: the new set is whole
        assert (holds_late, after_kill) == (1, before + 1)
    else:  # killed before the commit: the old set is whole
        assert (holds_late, after_kill) == (0, before)

    pipeline.run_archive(shop, first, last)
    assert_whole(shop, first, last)


def test_the_snapshot_holds_under_read_committed(shop: Settings) -> None:
    """Under READ COMMITTED, WITH CONSISTENT SNAPSHOT alone would let a later statement see newer rows."""
    _, last = history(shop)
    count = "SELECT COUNT(*) FROM orders WHERE created_at >= %s"
    with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        tidb.start_snapshot(cur)
        before = tidb.scalar(cur, count, (last,))
        add_order(shop, dt.datetime.combine(last, dt.time(8)))
        assert tidb.scalar(cur, count, (last,)) == before
        cur.execute("COMMIT")
        assert tidb.scalar(cur, count, (last,)) == before + 1


def test_a_second_archive_stops_while_one_runs(shop: Settings) -> None:
    first, last = history(shop)
    lock = archive.lock_name(shop, shop.warehouse())
    with (
        lease.hold(shop, lock, "archive", 0),
        pytest.raises(EcomError, match="another archive, purge or generate on this warehouse is running"),
    ):
        pipeline.run_archive(shop, last, last)
    # two real processes at once: one archives, the other stops with one clear line; the data stays whole
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", "archive", "--from", str(first), "--to", str(last)],
            env=env_for(shop),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, stderr in outcomes:
        if code != 0:
            assert code == 1 and "Traceback" not in stderr, stderr
            assert "another archive" in stderr or "in use by another process" in stderr, stderr
    assert_whole(shop, first, last)


def test_late_rows_are_found_by_verify_and_picked_up_by_recheck(shop: Settings) -> None:
    first, last = history(shop)
    day = last - dt.timedelta(days=3)
    add_order(shop, dt.datetime.combine(day, dt.time(23, 59, 59)))
    report = verify.verify(shop, first, last)
    assert not report.ok and report.days(verify.DIFFERS) == [day]
    cli = run_ecom(shop, "verify", "--from", str(first), "--to", str(last))
    assert cli.returncode == 1 and str(day) in cli.stdout, cli.stdout + cli.stderr
    assert cli.stderr.strip().count("\n") == 0 and "2 of " in cli.stderr and f"--from {day} --to {day}" in cli.stderr
    assert pipeline.run_recheck(shop, last, 5) == [day]
    assert_whole(shop, first, last)


def test_midnight_belongs_to_the_day_it_starts(shop: Settings) -> None:
    _, yesterday = history(shop)
    today = shop.today()
    start_of_yesterday = add_order(shop, dt.datetime.combine(yesterday, dt.time()))
    start_of_today = add_order(shop, dt.datetime.combine(today, dt.time()))
    pipeline.run_archive(shop, yesterday, yesterday)
    found = dict(
        raw_rows(shop, "SELECT ID, ORDER_DATE FROM ORDERS WHERE ID IN (%s, %s)", (start_of_yesterday, start_of_today))
    )
    assert found == {start_of_yesterday: yesterday}
    assert_whole(shop, yesterday, yesterday)


def test_archive_while_the_stream_writes_today_and_the_boundary(shop: Settings) -> None:
    _, yesterday = history(shop)
    today = shop.today()
    stop = threading.Event()
    written: list[int] = []

    def boundary_writer() -> None:
        # rows stamped on both sides of midnight, committed while the archive reads
        while not stop.is_set():
            written.append(add_order(shop, dt.datetime.combine(yesterday, dt.time(23, 59, 59))))
            written.append(add_order(shop, dt.datetime.combine(today, dt.time())))

    threads = [
        threading.Thread(target=boundary_writer),
        threading.Thread(target=stream, args=(shop, StreamSpec(rate=40, duration=3, seed=9))),
    ]
    for thread in threads:
        thread.start()
    try:
        pipeline.run_archive(shop, yesterday, yesterday)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert written
    assert raw_rows(shop, "SELECT COUNT(*) FROM ORDERS WHERE ORDER_DATE >= %s", (today,))[0][0] == 0
    # rows stamped yesterday that committed after the snapshot are late rows: the recheck picks them up
    pipeline.run_recheck(shop, today, 1)
    assert_whole(shop, yesterday, yesterday)


def test_a_dropped_connection_is_retried(shop: Settings, caplog: pytest.LogCaptureFixture) -> None:
    _, last = history(shop)
    killed: list[int] = []

    def kill_the_reader(_table: str, _done: int, _total: int) -> None:
        if killed:
            return
        with tidb.connection(shop) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                (shop.tidb.database,),
            )
            for (thread_id,) in cur.fetchall():
                cur.execute("KILL %s", (int(thread_id),))
                killed.append(int(thread_id))

    logging.getLogger("ecom").addHandler(caplog.handler)  # the CLI may have stopped propagation
    try:
        result = pipeline.run_archive(shop, last - dt.timedelta(days=1), last, kill_the_reader)
    finally:
        logging.getLogger("ecom").removeHandler(caplog.handler)
    assert killed, "the archive's connection was not found"
    assert any("retrying" in message for message in caplog.messages), caplog.messages
    assert (
        result.orders
        == tidb_rows(
            shop,
            "SELECT COUNT(*) FROM orders WHERE created_at >= %s AND created_at < %s",
            (last - dt.timedelta(days=1), shop.today()),
        )[0][0]
    )
    assert_whole(shop, last - dt.timedelta(days=1), last)


def test_retry_policy_retries_transient_failures_only() -> None:
    calls: list[int] = []

    def flaky(code: int, failures: int) -> str:
        calls.append(code)
        if len(calls) <= failures:
            raise pymysql.err.OperationalError(code, "simulated by the test")
        return "done"

    fast = retry.RetryPolicy(attempts=3, first_delay=0.001)
    assert retry.retrying(lambda: flaky(2013, 2), fast) == "done" and len(calls) == 3  # lost connection
    calls.clear()
    with pytest.raises(pymysql.err.OperationalError):
        retry.retrying(lambda: flaky(1205, 5), fast)  # lock wait timeout: bounded in attempts
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(pymysql.err.OperationalError):
        retry.retrying(lambda: flaky(1045, 5), fast)  # wrong password: at once
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(pymysql.err.OperationalError):
        retry.retrying(lambda: flaky(2013, 5), retry.RetryPolicy(attempts=10, first_delay=0.2, budget=0.3))
    assert len(calls) < 10  # bounded in time as well

    def closing_a_dead_cursor() -> None:  # what pymysql does when the server cut a streaming read
        try:
            raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
        except pymysql.err.OperationalError:
            raise AttributeError("'NoneType' object has no attribute 'settimeout'") from None

    assert not retry.is_transient(AttributeError("a bug"))
    try:
        closing_a_dead_cursor()
    except AttributeError as exc:
        assert not retry.is_transient(exc)  # `from None`: the cause was deliberately dropped
    try:
        try:
            raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
        except pymysql.err.OperationalError:
            raise AttributeError("'NoneType' object has no attribute 'settimeout'")  # noqa: B904
    except AttributeError as exc:
        assert retry.is_transient(exc)


def test_purge_deletes_only_proven_days_and_resumes_after_a_kill(shop: Settings) -> None:
    first, last = history(shop)
    pipeline.run_archive(shop, first, last)
    unproven = first + dt.timedelta(days=1)
    add_order(shop, dt.datetime.combine(unproven, dt.time(9)))  # a late row the warehouse lacks
    older_than = SPEC.days - 4  # purges the first 4 days of history
    cutoff = shop.today() - dt.timedelta(days=older_than)
    in_tidb = dict(
        tidb_rows(shop, "SELECT DATE(created_at), COUNT(*) FROM orders WHERE created_at < %s GROUP BY 1", (cutoff,))
    )

    killed = run_ecom(
        shop,
        "archive",
        "--date",
        str(last),
        "--purge-older-than",
        str(older_than),
        ECOM_FAILPOINT="purge.before_batch_commit",
    )
    assert killed.returncode == -9, killed.stderr
    states = dict(tidb_rows(shop, "SELECT day, state FROM archive_purges"))
    assert states and set(states.values()) == {"purging"} and unproven not in states

    result = pipeline.run_purge(shop, older_than)
    assert result.kept == [unproven]
    assert sorted(states) == result.purged
    left = dict(
        tidb_rows(shop, "SELECT DATE(created_at), COUNT(*) FROM orders WHERE created_at < %s GROUP BY 1", (cutoff,))
    )
    assert left == {unproven: in_tidb[unproven]}, "only the unproven day stays in TiDB"
    report = verify.verify(shop, first, cutoff - dt.timedelta(days=1))
    assert [c.day for c in report.checks if c.state == verify.PURGED] == [
        d for d in sorted(states) for _ in ("ORDERS", "EXPRESS")
    ]
    assert report.days(verify.DIFFERS) == [unproven]
    with pytest.raises(EcomError, match="purged from TiDB"):
        pipeline.run_archive(shop, first, last)  # would empty the purged days in the warehouse
    with pytest.raises(EcomError, match="only copy"):
        archive.forget(shop)  # dropping the archive would lose the purged days
    # the warehouse still holds every purged row once
    held = raw_rows(shop, "SELECT COUNT(*), COUNT(DISTINCT ID) FROM ORDERS WHERE ORDER_DATE < %s", (cutoff,))[0]
    assert held[0] == held[1] == sum(in_tidb.values()) - 1


def test_purge_keeps_rows_that_changed_after_they_were_proven(shop: Settings) -> None:
    from loaders import purge

    first, _ = history(shop)
    day = first + dt.timedelta(days=6)  # not among the days the purge test purged
    bounds = (day, day + dt.timedelta(days=1))
    pipeline.run_archive(shop, day, day)
    day_orders = "SELECT id FROM orders WHERE created_at >= %s AND created_at < %s ORDER BY id"
    archived = [row[0] for row in tidb_rows(shop, day_orders, bounds)]
    changed = archived[len(archived) // 2]
    with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("UPDATE orders SET amount = amount + 1 WHERE id = %s", (changed,))  # after the archive
    cfg = shop.tidb
    by_table = {e.table: e for e in archive.extracts(cfg.database, cfg.express_database)}
    with (
        warehouse.session(shop) as cfg_w,
        tidb.connection(shop, cfg.database) as conn,
        archive.archive_lock(shop, cfg_w) as held,
    ):
        wconn = warehouse.connect(cfg_w)
        try:
            orders, express = purge._delete_day(conn, cfg, wconn, cfg_w, by_table, day, held)
        finally:
            wconn.close()
    assert [row[0] for row in tidb_rows(shop, day_orders, bounds)] == [changed]
    assert (orders, express) == (len(archived) - 1, len(archived) - 1)
    kept_express = tidb_rows(
        shop,
        f"SELECT COUNT(*) FROM `{cfg.express_database}`.express e JOIN orders o ON o.id = e.order_id "
        "WHERE o.created_at >= %s AND o.created_at < %s",
        bounds,
    )
    assert kept_express == [(1,)]
    held = raw_rows(shop, "SELECT COUNT(*) FROM ORDERS WHERE ORDER_DATE = %s", (day,))
    assert held == [(len(archived),)], "the warehouse keeps the whole day"


def test_unchanged_dimensions_are_not_copied_again_changed_ones_are(shop: Settings) -> None:
    """The users/items snapshot is copied only when TiDB's digest of it moved: one scan instead of a copy."""
    first, last = history(shop)
    again = pipeline.run_archive(shop, last, last)
    assert (again.users, again.items) == (0, 0), "nothing changed: RAW already holds these rows"
    assert again.orders > 0

    with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("UPDATE users SET city = CONCAT(city, ' (moved)') WHERE id = 7")
    try:
        changed = pipeline.run_archive(shop, last, last)
        assert (changed.users, changed.items) == (SPEC.users, 0), "one user changed: the users snapshot again"
        ((city,),) = raw_rows(shop, "SELECT CITY FROM USERS WHERE ID = 7")
        assert city.endswith(" (moved)")
        snapshots = [c for c in verify.verify(shop, first, last).checks if c.day is None]
        assert {c.table for c in snapshots} == {"USERS", "ITEMS"} and all(c.state == verify.OK for c in snapshots)

        raw_rows(shop, "DELETE FROM USERS WHERE ID = 8")  # RAW lost a row behind the archive's back
        healed = pipeline.run_archive(shop, last, last)
        assert healed.users == SPEC.users, "a RAW copy that no longer holds what was copied is copied again"
    finally:
        with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
            cur.execute("UPDATE users SET city = REPLACE(city, ' (moved)', '') WHERE id = 7")
        pipeline.run_archive(shop, last, last)


def test_a_long_range_commits_run_by_run(shop: Settings) -> None:
    """A range archives in runs of whole days of up to ARCHIVE_RUN_ORDERS orders, each committed whole;
    killed in its first run, then rerun in several: whole."""
    _, last = history(shop)
    first = last - dt.timedelta(days=12)  # after the days purged above
    late_in_a_later_run = add_order(shop, dt.datetime.combine(last - dt.timedelta(days=1), dt.time(10)))
    killed = run_ecom(shop, "archive", "--from", str(first), "--to", str(last), ECOM_FAILPOINT="archive.after_stage")
    assert killed.returncode == -9, killed.stderr
    assert raw_rows(shop, "SELECT COUNT(*) FROM ORDERS WHERE ID = %s", (late_in_a_later_run,))[0][0] == 0

    runs: list[tuple[dt.date, dt.date]] = []
    real_archive = archive.archive

    def counted(settings: Settings, low: dt.date, high: dt.date, **options: Any) -> archive.ArchiveResult:
        runs.append((low, high))
        return real_archive(settings, low, high, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(archive, "ARCHIVE_RUN_ORDERS", 2_000)  # about three days of this shop per run
        patch.setattr(archive, "archive", counted)
        result = pipeline.run_archive(shop, first, last)
    assert len(runs) >= 4 and runs[0][0] == first and runs[-1][1] == last
    assert all(b[0] - a[1] == dt.timedelta(days=1) for a, b in itertools.pairwise(runs)), "consecutive, no gap"
    assert result.first_day == first and result.last_day == last
    start, end = archive.day_bounds(first, last)
    in_range = "SELECT COUNT(*) FROM orders WHERE created_at >= %s AND created_at < %s"
    assert result.orders == tidb_rows(shop, in_range, (start, end))[0][0]
    assert raw_rows(shop, "SELECT COUNT(*) FROM ORDERS WHERE ID = %s", (late_in_a_later_run,))[0][0] == 1
    assert_whole(shop, first, last)


def test_verify_in_windows_answers_as_one_snapshot(shop: Settings) -> None:
    """No snapshot outlives ECOM_MAX_TRANSACTION_SECONDS: verify reads TiDB in windows of days, one snapshot
    each. Its report is the one a single snapshot gives, differences included."""
    first, last = history(shop)
    add_order(shop, dt.datetime.combine(last - dt.timedelta(days=2), dt.time(9)))  # late: that day differs
    windows: list[tuple[dt.date, dt.date]] = []
    real_read = verify._read_tidb

    def counted(settings: Settings, low: dt.date, high: dt.date, *rest: Any) -> Any:
        windows.append((low, high))
        return real_read(settings, low, high, *rest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify, "_read_tidb", counted)
        windowed = verify.verify(shop, first, last, window_orders=1)  # a day per snapshot
    whole = verify.verify(shop, first, last, window_orders=10**9)  # one snapshot for every day
    days, dimensions = windows[:-1], windows[-1]
    assert len(days) >= 10 and days[0][0] == first and days[-1][1] == last and dimensions == (first, last)
    assert all(b[0] - a[1] == dt.timedelta(days=1) for a, b in itertools.pairwise(days)), "consecutive, no gap"
    assert windowed.checks == whole.checks
    assert last - dt.timedelta(days=2) in whole.days(verify.DIFFERS)


def test_a_snapshot_open_too_long_stops_before_publishing(shop: Settings) -> None:
    _, last = history(shop)
    logged = "SELECT MAX(ARCHIVED_AT) FROM ARCHIVE_LOG WHERE ARCHIVE_DATE = %s"
    before = raw_rows(shop, logged, (last,))
    impatient = dataclasses.replace(shop, max_transaction_seconds=0)
    with pytest.raises(EcomError, match="kept its TiDB snapshot open longer than ECOM_MAX_TRANSACTION_SECONDS=0"):
        pipeline.run_archive(impatient, last, last)
    assert raw_rows(shop, logged, (last,)) == before
