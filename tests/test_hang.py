"""A server that accepts connections and never answers hangs nothing: every wait on TiDB is bounded.

Through a fault-injecting proxy (tests/faultproxy.py) in front of the real server, and the real CLI in a
process of its own (each run under a timeout, so a hang fails the test instead of the suite): `ecom status`
answers within seconds and says TiDB did not answer; `dashboard` and `init` stop with one line; an archive
whose connection stalls mid-way is retried and finishes, and one whose server stays silent gives up within
its attempts. Statements silent by design (`tidb.patient`: LOAD DATA, DDL) get the long bound; interactive
reads are stopped by the server itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pymysql
import pytest

from loaders.bulk import load_frame
from loaders.generate import GenerateSpec
from runner import pipeline, retry, tidb
from runner.config import Settings, TiDBConfig
from runner.status import STATUS_TIDB_SECONDS
from tests.conftest import env_for, generated_shop, through_proxy
from tests.faultproxy import FaultProxy

READ_TIMEOUT = 2  # TIDB_READ_TIMEOUT_SECONDS of the CLI runs here: short, for speed
GUARD = 90  # seconds: a CLI run that takes longer hangs, and fails the test
SPEC = GenerateSpec(users=200, items=30, orders=1_500, days=3, seed=5)


def ecom(settings: Settings, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The real CLI on `settings` with a short read bound; its result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env={**env_for(settings), "TIDB_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT), **env},
        capture_output=True,
        text=True,
        timeout=GUARD,
    )
    return result, time.monotonic() - started


def one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1 and one `error:` line (after any `warning:` lines of retries), no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning:") for line in lines[:-1]), result.stderr
    assert lines[-1].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def no_answer(proxy: FaultProxy, seconds: float = READ_TIMEOUT) -> str:
    return f"TiDB at 127.0.0.1:{proxy.port} did not answer within {seconds:g} s"


def bound(settings: Settings, read: int, long: int = 3600) -> Settings:
    return dataclasses.replace(
        settings, tidb=dataclasses.replace(settings.tidb, read_timeout_seconds=read, long_statement_seconds=long)
    )


@pytest.fixture
def watched(proxied: tuple[Settings, FaultProxy]) -> Iterator[tuple[Settings, FaultProxy]]:
    """`proxied`, stopped after GUARD seconds: an in-process test waits on sockets with no bound of its own when
    the fix is missing, and stopping the proxy resets them, so that such a test fails instead of hanging."""
    watchdog = threading.Timer(GUARD, proxied[1].stop)
    watchdog.daemon = True
    watchdog.start()
    yield proxied
    watchdog.cancel()


# --- the commands ------------------------------------------------------------------------------------------


def test_status_answers_within_seconds_when_tidb_never_answers(
    proxied: tuple[Settings, FaultProxy], settings: Settings
) -> None:
    through, proxy = proxied
    tidb.init_schema(settings)  # a run log exists: status must not claim there is none
    proxy.stall()
    result, took = ecom(through, "status", "--json")
    assert took < READ_TIMEOUT + 8, f"status took {took:.1f} s"
    assert result.returncode == 1, result.stdout + result.stderr  # a side is down: the health check fails
    tables = {table["title"]: table["rows"] for table in json.loads(result.stdout)}
    sides = {row["side"]: row["server"] for row in tables["Connections"]}
    assert sides["TiDB side"].startswith("unreachable: " + no_answer(proxy)), sides
    assert sides["warehouse"] == "fakesnow stand-in"  # the other side is still reported
    assert [row["detail"] for row in tables["Last runs"]] == ["not read: TiDB is unreachable (see Connections)"]


def test_status_answers_within_seconds_when_tidb_answers_ever_so_slowly(proxied: tuple[Settings, FaultProxy]) -> None:
    """Each packet comes within the read bound, yet the whole would take far longer: status stops waiting."""
    through, proxy = proxied
    proxy.delay(0.7)  # a round trip takes 1.4 s, within the read bound; the handshake alone takes about 8 s
    result, took = ecom(through, "status", "--json")
    assert took < STATUS_TIDB_SECONDS + 8, f"status took {took:.1f} s"
    # unreachable, or reached and not done counting: either way it says it stopped waiting
    assert f"did not finish counting within {STATUS_TIDB_SECONDS} s" in result.stdout or (
        f"did not answer within {STATUS_TIDB_SECONDS} s" in result.stdout and result.returncode == 1
    ), result.stdout


def test_status_without_a_schema_still_says_there_is_no_run_log(settings: Settings) -> None:
    result, _ = ecom(settings, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    tables = {table["title"]: table["rows"] for table in json.loads(result.stdout)}
    assert [row["detail"] for row in tables["Last runs"]] == ["no run log yet (run `ecom init`)"]


@pytest.mark.parametrize("command", [["dashboard"], ["init"], ["orders", "1"]])
def test_commands_stop_with_one_line_when_tidb_never_answers(
    proxied: tuple[Settings, FaultProxy], command: list[str]
) -> None:
    through, proxy = proxied
    proxy.stall()
    result, took = ecom(through, *command)
    assert took < READ_TIMEOUT + 8, f"{command} took {took:.1f} s"
    one_error_line(result, no_answer(proxy), "(TIDB_READ_TIMEOUT_SECONDS)")


# --- archive: retried past a stall, bounded when the stall lasts -------------------------------------------


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with generated_shop(server, tmp_path_factory, "hang", SPEC) as settings:
        yield settings


@pytest.fixture
def shop_proxy(shop: Settings) -> Iterator[tuple[Settings, FaultProxy]]:
    with through_proxy(shop) as pair:
        yield pair


def test_archive_stalled_mid_way_is_retried_and_finishes(
    shop_proxy: tuple[Settings, FaultProxy], shop: Settings
) -> None:
    through, proxy = shop_proxy
    day = shop.today() - dt.timedelta(days=1)
    gate = Path(through.home) / "gate"
    run = subprocess.Popen(
        [sys.executable, "-m", "runner", "archive", "--date", str(day)],
        env={
            **env_for(through),
            "TIDB_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
            "ECOM_FAILPOINT_PAUSE": f"archive.between_batches={gate}",  # it has begun reading orders
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + GUARD
        while not Path(f"{gate}.reached").exists():
            assert run.poll() is None, f"the archive ended before its pause: {run.communicate()}"
            assert time.monotonic() < deadline, "the archive never reached its pause"
            time.sleep(0.05)
        proxy.stall_open()  # the run's connections now go silent; a new connection passes
        opened = proxy.accepted
        gate.touch()
        out, err = run.communicate(timeout=GUARD)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, out + err
    assert f"warning: {no_answer(proxy)} (TIDB_READ_TIMEOUT_SECONDS)" in err and "retrying" in err, err
    assert proxy.accepted > opened  # the retry connected anew
    report = pipeline.run_verify(shop, day, day)  # straight to the server
    assert report.ok and report.checks and all(c.tidb.rows == c.warehouse.rows for c in report.checks), report


def test_archive_against_a_server_that_stays_silent_gives_up_in_bounded_time(
    shop_proxy: tuple[Settings, FaultProxy], shop: Settings
) -> None:
    through, proxy = shop_proxy
    proxy.stall()
    result, took = ecom(through, "archive", "--date", str(shop.today() - dt.timedelta(days=2)))
    policy = retry.RetryPolicy()
    most = policy.attempts * (READ_TIMEOUT + 1) + policy.budget  # every attempt, every wait between them
    assert took < most, f"the archive took {took:.1f} s"
    one_error_line(result, no_answer(proxy), "(TIDB_READ_TIMEOUT_SECONDS)")
    assert result.stderr.count("warning:") == policy.attempts - 1, result.stderr  # it was retried


# --- the bounds themselves, on connections of the runner ---------------------------------------------------


def stalled_for(proxy: FaultProxy, seconds: float) -> threading.Timer:
    """Stall the proxy now, and let everything pass again after `seconds`."""
    proxy.stall()
    timer = threading.Timer(seconds, proxy.pass_all)
    timer.start()
    return timer


def test_patient_widens_the_bound_for_its_block_only(watched: tuple[Settings, FaultProxy]) -> None:
    """pymysql reads the bound from a private attribute before each packet: this holds `patient` to that, both
    for a statement the server takes long over and for a network that is silent for a while."""
    through, proxy = watched
    conn = tidb.connect(bound(through, read=1, long=10))
    try:
        with tidb.patient(conn), conn.cursor() as cur:  # TIDB_LONG_STATEMENT_SECONDS
            cur.execute("SELECT SLEEP(2.5)")
            assert cur.fetchall() == ((0,),)
        timer = stalled_for(proxy, 2.5)
        started = time.monotonic()
        with tidb.patient(conn, 10), conn.cursor() as cur:
            cur.execute("SELECT 42")
            assert cur.fetchall() == ((42,),)
        assert time.monotonic() - started > 2, "the proxy did not stall"
        timer.join()
        started = time.monotonic()
        with pytest.raises(tidb.NoAnswer) as failure, conn.cursor() as cur:  # outside: the connection's own bound
            cur.execute("SELECT SLEEP(2.5)")
        assert time.monotonic() - started < 2
        assert failure.value.args[0] == 2013 and retry.is_transient(failure.value)
        assert "did not answer within 1 s (TIDB_READ_TIMEOUT_SECONDS)" in str(failure.value)
    finally:
        conn.close()


def test_load_data_is_patient(watched: tuple[Settings, FaultProxy]) -> None:
    """The server answers a LOAD DATA only once the batch is in: that silence is not a dead server."""
    through, proxy = watched
    conn = tidb.connect(bound(through, read=1, long=10))
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{through.tidb.database}`")
            cur.execute(f"CREATE TABLE `{through.tidb.database}`.t (id INT PRIMARY KEY)")
        timer = stalled_for(proxy, 2.5)
        assert load_frame(conn, f"`{through.tidb.database}`.t", pd.DataFrame({"id": range(100)})) == 100
        timer.join()
    finally:
        conn.close()


def test_a_stalled_streaming_read_says_the_server_did_not_answer(watched: tuple[Settings, FaultProxy]) -> None:
    """Not pymysql's AttributeError from closing the cursor of a connection it has already closed."""
    through, proxy = watched
    conn = tidb.connect(bound(through, read=1), "mysql", streaming=True)
    try:
        with pytest.raises(tidb.NoAnswer), conn.cursor() as cur:
            cur.execute("SELECT seq FROM seq_1_to_5000000")  # MariaDB's sequence engine: rows as fast as it can
            assert cur.fetchmany(10)
            proxy.stall_open()
            while cur.fetchmany(10_000):
                pass
    finally:
        conn.close()


def test_interactive_reads_are_stopped_by_the_server(settings: Settings) -> None:
    """The server's own limit (MariaDB max_statement_time, MySQL/TiDB max_execution_time), 1 s under the read
    bound: the query ends on the server too, and the connection stays usable."""
    conn = tidb.connect(bound(settings, read=3), interactive=True)
    try:
        started = time.monotonic()
        with pytest.raises(tidb.StatementStopped, match="stopped a query that ran past 2 s"), conn.cursor() as cur:
            cur.execute("SELECT SLEEP(10)")
        assert time.monotonic() - started < 2.9  # the server's answer, before the client's bound
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
    finally:
        conn.close()
    plain = tidb.connect(bound(settings, read=3))  # a step's connection: no server-side limit
    try:
        with plain.cursor() as cur:
            cur.execute("SELECT SLEEP(2.5)")
            assert cur.fetchall() == ((0,),)
    finally:
        plain.close()


def test_a_cut_connection_is_a_lost_connection(watched: tuple[Settings, FaultProxy]) -> None:
    """The proxy's cut: the reset reaches the client at once, as the driver's own lost-connection error."""
    through, proxy = watched
    conn = tidb.connect(bound(through, read=30))
    try:
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as failure, conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert time.monotonic() - started < 5 and retry.is_transient(failure.value)
        assert not isinstance(failure.value, tidb.NoAnswer)
    finally:
        conn.close()
