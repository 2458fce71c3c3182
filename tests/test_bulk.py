"""The bulk path into the TiDB side, against the real server: exact round trips, loud on lossy data."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from loaders import bulk
from loaders.bulk import load_batches, load_frame
from runner import tidb
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, make_settings


@pytest.fixture
def table(settings: Settings) -> str:
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{settings.tidb.database}`")
        cur.execute(
            f"CREATE TABLE `{settings.tidb.database}`.t (id INT PRIMARY KEY, name VARCHAR(12), "
            "at DATETIME NULL, amount DECIMAL(6,2) NULL)"
        )
    return f"`{settings.tidb.database}`.t"


def _read(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, name, at, amount FROM {table} ORDER BY id")
        return list(cur.fetchall())


def test_text_nulls_and_escapes_round_trip(settings: Settings, table: str) -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "name": ["tab\there", 'q"uo\\te\nnl', None],
            "at": pd.to_datetime(["2026-01-01 01:02:03", None, "2026-01-02 00:00:00"]),
            "amount": [1.5, None, 9999.99],
        }
    )
    with tidb.connection(settings) as conn:
        assert load_frame(conn, table, frame) == 3
    rows = _read(settings, table)
    assert [r[1] for r in rows] == ["tab\there", 'q"uo\\te\nnl', None]
    assert [r[2] for r in rows] == [dt.datetime(2026, 1, 1, 1, 2, 3), None, dt.datetime(2026, 1, 2)]
    assert [None if r[3] is None else float(r[3]) for r in rows] == [1.5, None, 9999.99]


@pytest.mark.parametrize(
    "bad",
    [{"name": "much too long a name"}, {"amount": 123456789.0}, {"id": 1}],  # truncation, clamping, duplicate
)
def test_lossy_loads_fail_loudly(settings: Settings, table: str, bad: dict[str, object]) -> None:
    with tidb.connection(settings) as conn:
        load_frame(conn, table, pd.DataFrame({"id": [1], "name": ["first"]}))
        row = {"id": 2, "name": "ok", "amount": 1.0} | bad
        with pytest.raises(EcomError, match="was not exact"):
            load_frame(conn, table, pd.DataFrame([row]))


def _leftover_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ecom_load_*.tsv")}


def test_batches_load_in_order_while_the_next_are_rendered(settings: Settings, table: str) -> None:
    before = _leftover_files()
    frames = [pd.DataFrame({"id": range(start, start + 1000), "name": ["n"] * 1000}) for start in (0, 1000, 2000)]
    with tidb.connection(settings) as conn:
        loaded = [len(frame) for _, frame in load_batches(conn, ((table, f) for f in frames), ahead=1)]
    assert loaded == [1000, 1000, 1000]
    assert [r[0] for r in _read(settings, table)] == list(range(3000))
    assert _leftover_files() == before


def test_batches_stop_cleanly_on_a_producer_error_and_on_early_close(settings: Settings, table: str) -> None:
    before = _leftover_files()

    def failing() -> Iterator[tuple[str, pd.DataFrame]]:
        yield table, pd.DataFrame({"id": [1], "name": ["one"]})
        raise ValueError("generator broke")

    with tidb.connection(settings) as conn:
        with pytest.raises(ValueError, match="generator broke"):
            for _ in load_batches(conn, failing()):
                pass
        endless = ((table, pd.DataFrame({"id": [n + 10], "name": ["x"]})) for n in itertools.count())
        batches = load_batches(conn, endless, ahead=2)
        next(batches)
        batches.close()  # the caller stops early: the thread stops, its rendered files are removed
    assert [r[0] for r in _read(settings, table)] == [1, 10]
    assert _leftover_files() == before


@pytest.fixture(scope="module")
def text_table(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("bulk_text")), "bulk_text")
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{settings.tidb.database}` CHARACTER SET utf8mb4")
        cur.execute(
            f"CREATE TABLE `{settings.tidb.database}`.t (id INT PRIMARY KEY, a VARCHAR(300) NULL, "
            "b VARCHAR(300) NULL, at DATETIME NULL) CHARACTER SET utf8mb4"
        )
    yield settings, f"`{settings.tidb.database}`.t"
    drop_databases(settings)


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # any unicode a utf8mb4 column holds


@settings_(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.none() | TEXT,
            st.none() | TEXT,
            st.none() | st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2099, 12, 31)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_text_round_trips_through_both_writers(
    text_table: tuple[Settings, str], rows: list[tuple[str | None, str | None, dt.datetime | None]]
) -> None:
    """Arrow writes what it can, pandas the rest (a double quote): either way the server stores each value."""
    settings, table = text_table
    frame = pd.DataFrame(
        {
            "id": range(len(rows)),
            "a": [r[0] for r in rows],
            "b": [r[1] for r in rows],
            "at": pd.to_datetime([r[2] for r in rows]).astype("datetime64[us]"),
        }
    )
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table}")
        assert load_frame(conn, table, frame) == len(rows)
        cur.execute(f"SELECT a, b, at FROM {table} ORDER BY id")
        stored = list(cur.fetchall())
    expected = [(a, b, None if at is None else at.replace(microsecond=0)) for a, b, at in rows]
    assert stored == expected


def test_load_files_of_killed_processes_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `kill -9` in a load leaves its rendered file behind (no cleanup runs); the next load removes it, and
    never a file of a process that still runs."""
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, pandas as pd; from loaders import bulk; "
            "print(bulk._render('t', pd.DataFrame({'a': [1]})).path, flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.exists()
    monkeypatch.setattr(bulk, "_swept", False)
    ours = bulk._render("t", pd.DataFrame({"a": [1]}))  # the first load of a process sweeps
    try:
        assert not left.exists()
        monkeypatch.setattr(bulk, "_swept", False)
        assert str(ours.path) not in bulk.sweep_dead_files() and Path(ours.path).exists(), "a live process's stays"
    finally:
        os.unlink(ours.path)
