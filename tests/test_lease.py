"""The lock that archive, purge, generate's reset and export take turns on holds where TiDB Cloud cuts
connections: the holder's connections killed on the server mid-run change nothing; a holder paused past its
lease loses it to a waiting run and stops before it publishes, with one line, and nothing is doubled."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders import archive, verify
from loaders.generate import GenerateSpec
from runner import lease, pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import env_for, generated_shop

SPEC = GenerateSpec(users=400, items=60, orders=3_000, days=6, seed=11)


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with generated_shop(server, tmp_path_factory, "lease", SPEC) as settings:
        yield settings


def _paused_archive(settings: Settings, day: dt.date, gate: Path, **env: str) -> subprocess.Popen[str]:
    """`ecom archive --date day` in a process of its own, stopping after its stage is written (before it
    publishes) until `gate` exists."""
    run = subprocess.Popen(
        [sys.executable, "-m", "runner", "archive", "--date", str(day)],
        env={**env_for(settings), "ECOM_FAILPOINT_PAUSE": f"archive.after_stage={gate}", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not Path(f"{gate}.reached").exists():
        if run.poll() is not None:
            pytest.fail(f"the archive ended before its pause: {run.communicate()}")
        assert time.monotonic() < deadline, "the archive never reached its pause"
        time.sleep(0.05)
    return run


def _kill_connections(settings: Settings) -> int:
    """KILL, on the server, every session on the shop's databases but this one: the holder's included."""
    cfg = settings.tidb
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND db IN (%s, %s)",
            (cfg.database, cfg.express_database),
        )
        ids = [int(row[0]) for row in cur.fetchall()]
        for session in ids:
            cur.execute("KILL %s", (session,))
    return len(ids)


def _logged_days(settings: Settings) -> list[tuple[dt.date, int]]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            if not warehouse.table_exists(conn, cfg, cfg.raw_schema, "ARCHIVE_LOG"):
                return []
            cur = conn.cursor()
            cur.execute("SELECT ARCHIVE_DATE, ROW_COUNT FROM ARCHIVE_LOG WHERE TABLE_NAME = 'ORDERS' ORDER BY 1")
            return [(day, int(rows)) for day, rows in cur.fetchall()]
        finally:
            conn.close()


def test_one_holder_at_a_time_and_tokens_grow(shop: Settings) -> None:
    with lease.hold(shop, "test:turns", "test run", 0) as first:
        with pytest.raises(EcomError, match="another x is running"), lease.hold(shop, "test:turns", "x", 0):
            pass
        first.ensure("writing")  # still ours
    with lease.hold(shop, "test:turns", "test run", 0) as second:
        assert second.token == first.token + 1  # the fencing token moves on with each holder


def test_killed_connections_do_not_free_the_lock(shop: Settings, tmp_path: Path) -> None:
    """With GET_LOCK, killing the holder's connection (an idle cut on TiDB Cloud) freed the lock mid-run."""
    day = shop.today() - dt.timedelta(days=2)
    run = _paused_archive(shop, day, tmp_path / "gate")
    try:
        assert _kill_connections(shop) >= 1, "the paused archive held no session to kill"
        name = archive.lock_name(shop, shop.warehouse())
        with (
            pytest.raises(EcomError, match=r"is running \(.*: archive, purge or generate on this warehouse"),
            lease.hold(shop, name, "archive, purge or generate", 0),
        ):
            pass
        (tmp_path / "gate").touch()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out + err
    assert day in dict(_logged_days(shop))


def test_a_holder_paused_past_its_lease_stops_before_publishing(shop: Settings, tmp_path: Path) -> None:
    day = shop.today() - dt.timedelta(days=3)
    before = _logged_days(shop)
    assert day not in dict(before)
    run = _paused_archive(shop, day, tmp_path / "gate", ECOM_LOCK_LEASE_SECONDS="2")
    try:
        os.kill(run.pid, signal.SIGSTOP)  # frozen, its keep-alive thread too: the lease runs out
        waited = time.monotonic()
        with lease.hold(shop, archive.lock_name(shop, shop.warehouse()), "second archive", 30) as second:
            assert time.monotonic() - waited < 10, "the second run waited longer than the lease"
            os.kill(run.pid, signal.SIGCONT)
            (tmp_path / "gate").touch()
            out, err = run.communicate(timeout=120)
            second.ensure("checking")  # the first run took nothing back
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGCONT)
            run.kill()
    assert run.returncode == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "lost its lock" in lines[0] and "stopped before publishing" in lines[0], err
    assert _logged_days(shop) == before, "the run that lost its lock published"
    assert [t for t in _warehouse_tables(shop) if "__STAGE_" in t] == []  # its `finally` dropped its stages
    # and the day archives whole afterwards
    pipeline.run_archive(shop, day, day)
    report = verify.verify(shop, day, day, daily_only=True)
    assert report.ok, report.checks


def _warehouse_tables(settings: Settings) -> list[str]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            cur.execute(
                f"SELECT table_name FROM {cfg.database}.information_schema.tables WHERE table_schema = %s",
                (cfg.raw_schema,),
            )
            return [str(row[0]) for row in cur.fetchall()]
        finally:
            conn.close()


def test_an_expired_lease_nobody_took_is_still_ours_a_taken_one_is_not(shop: Settings) -> None:
    """A holder cut off from TiDB past its lease goes on if nobody took over (holder and token unchanged);
    once another run took it, every write of the first stops."""
    with lease.hold(shop, "test:expiry", "first", 0) as first:
        expire = "UPDATE run_leases SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE name = %s"
        with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
            cur.execute(expire, (first.key,))
        first.ensure("writing")  # expired, not taken: renewed
        with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
            cur.execute(expire, (first.key,))
        with lease.hold(shop, "test:expiry", "second", 0) as second:
            assert second.token == first.token + 1
            with pytest.raises(lease.LeaseLost, match=r"lost its lock.*stopped before writing"):
                first.ensure("writing")


def test_a_dead_holder_of_this_host_is_told_from_a_live_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = lease._process_identity(child.pid)
        assert identity is not None
        holder = f"{socket.gethostname()}:{child.pid}:{identity}:test"
        assert not lease._dead_here(holder)
        assert not lease._dead_here(f"elsewhere:{child.pid}:{identity}:test")  # another host: cannot tell
    finally:
        child.kill()
        child.wait()
    assert lease._dead_here(holder)
    assert not lease._dead_here(f"{socket.gethostname()}:{child.pid}:-:test")  # no identity: wait it out
