"""Ctrl-C stops every command: exit 130 and the one line `interrupted`, whatever the interrupt turned into
(a lost connection, a failed dbt run, an error of the warehouse stand-in), with no retry and no finish.

A real process and a real SIGINT, sent while the run is at a known point: in a LOAD DATA (seen in the
server's process list), in dbt's models (seen in dbt's log), in an archive (at a pause gate, and after it).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from loaders.generate import GenerateSpec, generate
from runner import pipeline, tidb
from runner.config import Settings
from tests.conftest import env_for

SMALL = GenerateSpec(users=300, items=50, orders=3_000, days=10, seed=4)


def start(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        env={**env_for(settings), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(what: str, found: Callable[[], bool], process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not found():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before {what}: {out[-1500:]} {err[-1500:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {seconds} s")
        time.sleep(0.01)


def interrupted(process: subprocess.Popen[str], signum: int = signal.SIGINT) -> tuple[str, str]:
    """Signal the run and wait (bounded) for it: exit 128 + the signal, one line on stderr, no retry."""
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running a minute after Ctrl-C")
    assert process.returncode == 128 + signum, (process.returncode, out[-2000:], err[-2000:])
    assert err == ("terminated\n" if signum == signal.SIGTERM else "interrupted\n"), err
    assert "retrying" not in err and "Traceback" not in out + err and "AttributeError" not in out + err
    return out, err


def logged_steps(settings: Settings) -> set[str]:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT step FROM `{settings.tidb.database}`.pipeline_runs")
        return {row[0] for row in cur.fetchall()}


def test_generate_interrupted_in_a_load(settings: Settings) -> None:
    """The interrupt lands in a LOAD DATA of orders: it must not surface as a lost connection that a retry
    gets past (the run then went on and finished with exit 0), nor wait for a read timeout."""
    tidb.init_schema(settings)
    cfg = settings.tidb
    watcher = pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, autocommit=True)
    run = start(settings, "generate", "--users", "2000", "--items", "200", "--orders", "400000", "--days", "30")

    def loading_orders() -> bool:
        with watcher.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'LOAD DATA%%' AND info LIKE %s",
                (f"%`{cfg.database}`.%orders%",),
            )
            return bool(cur.fetchone()[0])

    try:
        wait_for("a LOAD DATA of orders", loading_orders, run)
        signalled = time.monotonic()
        out, _ = interrupted(run)
    finally:
        watcher.close()
    # cut in the middle of a packet, the server waits for its rest: the load's socket is shut down at once
    assert time.monotonic() - signalled < 10, "it waited for a read timeout"
    assert "generated" not in out
    assert "generate" not in logged_steps(settings)


def test_transform_interrupted_in_dbt(settings: Settings) -> None:
    """Ctrl-C while dbt builds models: no attribute error of the stand-in (dbt cancels queries by a
    Snowflake session id), no stack trace, no `dbt build failed`."""
    tidb.init_schema(settings)
    generate(settings, SMALL)
    today = settings.today()
    pipeline.run_archive(settings, today - dt.timedelta(days=SMALL.days), today - dt.timedelta(days=1))
    log = settings.home / "dbt" / "logs" / "dbt.log"
    run = start(settings, "transform")

    def building() -> bool:
        return log.exists() and " START sql " in log.read_text(errors="replace")

    wait_for("a model started in dbt's log", building, run)
    out, _ = interrupted(run)
    assert "nodes passed" not in out
    assert "transform" not in logged_steps(settings)


@pytest.mark.parametrize(
    ("after_gate", "signum"),
    [(None, signal.SIGINT), (0.2, signal.SIGINT), (None, signal.SIGTERM)],
    ids=["at-the-gate", "after-the-gate", "sigterm"],
)
def test_archive_interrupted(settings: Settings, tmp_path: Path, after_gate: float | None, signum: int) -> None:
    """At a pause gate in the middle of the read, and a moment after it is released (reading, staging or
    publishing): never retried, never finished. SIGTERM is handled the same way (exit 143, `terminated`)."""
    tidb.init_schema(settings)
    generate(settings, SMALL)
    gate = tmp_path / "gate"
    yesterday = settings.today() - dt.timedelta(days=1)
    run = start(
        settings,
        "archive",
        "--from",
        str(yesterday - dt.timedelta(days=SMALL.days - 1)),
        "--to",
        str(yesterday),
        ECOM_FAILPOINT_PAUSE=f"archive.between_batches={gate}",
    )
    wait_for("the pause gate", Path(f"{gate}.reached").exists, run)
    if after_gate is not None:
        gate.touch()
        time.sleep(after_gate)
    out, _ = interrupted(run, signum)
    gate.touch()  # a run that ignored the signal would go on from here: `interrupted` already failed it
    assert "archived" not in out
    assert "archive" not in logged_steps(settings)


def test_second_interrupt_exits_at_once(settings: Settings, tmp_path: Path) -> None:
    """A second Ctrl-C while the first one's cleanup waits (here on the lease row, which the test locks):
    the process ends at once, still with one line and exit 130."""
    tidb.init_schema(settings)
    generate(settings, SMALL)
    gate = tmp_path / "gate"
    yesterday = settings.today() - dt.timedelta(days=1)
    run = start(settings, "archive", "--date", str(yesterday), ECOM_FAILPOINT_PAUSE=f"archive.between_batches={gate}")
    wait_for("the pause gate", Path(f"{gate}.reached").exists, run)
    cfg = settings.tidb
    locker = pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password)
    try:
        with locker.cursor() as cur:  # the release of the lease, in the cleanup, now waits for this
            cur.execute("BEGIN")
            cur.execute(f"SELECT * FROM `{cfg.database}`.run_leases FOR UPDATE")
        run.send_signal(signal.SIGINT)
        time.sleep(1)
        assert run.poll() is None, "the cleanup was expected to wait on the lease row"
        run.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = run.communicate(timeout=60)
        assert time.monotonic() - started < 3
        assert run.returncode == 130 and err == "interrupted\n", (run.returncode, err)
    finally:
        locker.close()


def test_timed_stream_interrupted(settings: Settings) -> None:
    """Ctrl-C is how an endless `ecom stream` ends (exit 0, tests/test_stream.py); a timed one (the demo's,
    `--duration`) is interrupted like any other step, its committed ticks kept whole."""
    tidb.init_schema(settings)
    generate(settings, SMALL)
    run = start(settings, "stream", "--duration", "60", "--rate", "8")
    time.sleep(3)
    out, _ = interrupted(run)
    assert "streamed" not in out and "stream" not in logged_steps(settings)
    db, xdb = settings.tidb.database, settings.tidb.express_database
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*) FROM `{db}`.orders o LEFT JOIN `{xdb}`.express e ON e.order_id = o.id WHERE e.id IS NULL"
        )
        assert cur.fetchone()[0] == 0
