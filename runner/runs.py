"""The pipeline's own log on the TiDB side: one row per step, read by `ecom status`."""

from __future__ import annotations

import datetime as dt

import pymysql

from runner import tidb
from runner.config import Settings


def record(settings: Settings, step: str, started_at: dt.datetime, detail: str) -> None:
    db = settings.tidb.database
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO `{db}`.pipeline_runs (step, started_at, finished_at, detail) VALUES (%s, %s, %s, %s)",
            (step, started_at, settings.now(), detail[:1000]),
        )


def last_runs(conn: pymysql.connections.Connection, db: str) -> dict[str, tuple[dt.datetime, str]]:
    """The last run of each step, read on `conn` (`ecom status` reads everything on one bounded connection)."""
    with conn.cursor() as cur:
        cur.execute(
            # by time, not id: on TiDB the key is AUTO_RANDOM and does not grow with time
            f"SELECT step, finished_at, detail FROM `{db}`.pipeline_runs r WHERE finished_at = "
            f"(SELECT MAX(finished_at) FROM `{db}`.pipeline_runs WHERE step = r.step)"
        )
        return {step: (finished, detail) for step, finished, detail in cur.fetchall()}
