"""The bulk path into the TiDB side, against the real server: exact round trips, loud on lossy data."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from loaders.bulk import load_frame
from runner import tidb
from runner.config import Settings
from runner.errors import EcomError


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
