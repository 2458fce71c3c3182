"""Bulk writes into the TiDB side: LOAD DATA LOCAL INFILE where the server allows it, batched INSERTs else."""

from __future__ import annotations

import csv
import os
import tempfile
import weakref
from collections.abc import Sequence

import pandas as pd
import pymysql

from runner.errors import EcomError

# Error codes a server gives when LOCAL INFILE is switched off on its side.
_LOCAL_INFILE_REFUSED = {1148, 3948, 2068}
INSERT_BATCH_ROWS = 5_000
_LOCAL_INFILE_OFF: weakref.WeakSet[pymysql.connections.Connection] = weakref.WeakSet()
# LOAD DATA's escapes, applied to text before writing, so that \N stays the NULL marker.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def insert_rows(
    conn: pymysql.connections.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> int:
    """Batched multi-row INSERTs (pymysql rewrites executemany into multi-row statements)."""
    sql = f"INSERT INTO {table} ({_quoted(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with conn.cursor() as cur:
        for start in range(0, len(rows), INSERT_BATCH_ROWS):
            cur.executemany(sql, rows[start : start + INSERT_BATCH_ROWS])
    return len(rows)


def load_frame(conn: pymysql.connections.Connection, table: str, frame: pd.DataFrame) -> int:
    """Load a DataFrame into `table` (columns by name) in bulk; returns the rows loaded.

    The caller owns the transaction: with autocommit off, a failure leaves nothing behind.
    """
    if frame.empty:
        return 0
    columns = list(frame.columns)
    if conn not in _LOCAL_INFILE_OFF:
        fd, path = tempfile.mkstemp(prefix="ecom_load_", suffix=".tsv")
        os.close(fd)
        try:
            text_columns = {
                c: frame[c].str.translate(_ESCAPES)
                for c in columns
                if pd.api.types.infer_dtype(frame[c], skipna=True) == "string"
            }
            frame.assign(**text_columns).to_csv(
                path,
                sep="\t",
                header=False,
                index=False,
                na_rep="\\N",
                quoting=csv.QUOTE_NONE,
                quotechar="\0",
                lineterminator="\n",
                date_format="%Y-%m-%d %H:%M:%S",
            )
            with conn.cursor() as cur:
                loaded = cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                    f"({_quoted(columns)})",
                    (path,),
                )
                # LOCAL turns bad values into warnings (truncated, clamped, defaulted): treat them as errors.
                cur.execute("SHOW WARNINGS LIMIT 3")
                warnings = cur.fetchall()
            if warnings or loaded != len(frame):
                detail = "; ".join(str(w[2]) for w in warnings) if warnings else f"{loaded} of {len(frame)} rows"
                raise EcomError(f"loading {table} was not exact ({detail})", "fix the data or the table definition")
            return loaded
        except pymysql.err.MySQLError as exc:
            if not (exc.args and exc.args[0] in _LOCAL_INFILE_REFUSED):
                raise
            _LOCAL_INFILE_OFF.add(conn)  # the server said no: stay on INSERTs for this connection
        finally:
            os.unlink(path)
    rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
    return insert_rows(conn, table, columns, list(rows))
