"""The reference every bench figure is a ratio of: the server's own bulk path, LOAD DATA LOCAL INFILE, on the
very rows `generate` produces (same spec, same seed), into empty copies of the same table definitions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import time

from loaders.bulk import load_tsv, write_tsv
from loaders.generate import GenerateSpec, allow_explicit_keys, generated_batches
from runner import tidb
from runner.config import Settings


def reference_database(settings: Settings) -> str:
    return f"{settings.tidb.database}_ref"


def load_data_reference(settings: Settings, spec: GenerateSpec, end_day: dt.date) -> tuple[int, float]:
    """(rows, seconds of LOAD DATA alone): each batch is written as TSV untimed, then loaded timed."""
    cfg = settings.tidb
    ref = reference_database(settings)
    sources = {"users": cfg.database, "items": cfg.database, "orders": cfg.database, "express": cfg.express_database}
    rows, seconds = 0, 0.0
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        allow_explicit_keys(conn)  # the generated rows carry their ids, as in `generate`
        cur.execute(f"DROP DATABASE IF EXISTS `{ref}`")
        cur.execute(f"CREATE DATABASE `{ref}`")
        try:
            for table, source in sources.items():
                cur.execute(f"CREATE TABLE `{ref}`.{table} LIKE `{source}`.{table}")
            for table, frame in generated_batches(spec, end_day, settings.now()):
                fd, path = tempfile.mkstemp(prefix="ecom_bench_", suffix=".tsv")
                os.close(fd)
                try:
                    write_tsv(frame, path)
                    started = time.perf_counter()
                    rows += load_tsv(conn, f"`{ref}`.{table}", list(frame.columns), path, len(frame))
                    seconds += time.perf_counter() - started
                finally:
                    os.unlink(path)
        finally:
            with contextlib.suppress(Exception):
                cur.execute(f"DROP DATABASE IF EXISTS `{ref}`")
    return rows, seconds
