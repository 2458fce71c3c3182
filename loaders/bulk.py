"""Bulk writes into the TiDB side: LOAD DATA LOCAL INFILE where the server allows it, batched INSERTs else.

`load_batches` overlaps the client's work with the server's: while the server loads one batch, a thread
produces the next ones (generating them and rendering them as TSV), so a load runs at the server's pace.
"""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import socket
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pymysql

from runner import interrupt, tidb
from runner.errors import EcomError

# Error codes a server gives when LOCAL INFILE is switched off on its side.
_LOCAL_INFILE_REFUSED = {1148, 3948, 2068}
INSERT_BATCH_ROWS = 5_000
_LOCAL_INFILE_OFF: weakref.WeakSet[pymysql.connections.Connection] = weakref.WeakSet()
# LOAD DATA's escapes, applied to text before writing, so that \N stays the NULL marker.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
_SPECIAL = "\\\t\n\r\0"
_ARROW_TSV = pa_csv.WriteOptions(include_header=False, delimiter="\t", null_string="\\N", quoting_style="none")


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


def _escaped(column: pd.Series) -> pd.Series:
    """Text with LOAD DATA's escapes applied; most columns hold none of those characters, which one scan of
    the joined text tells far faster than escaping value by value."""
    joined = "".join(column.dropna().tolist())
    if not any(char in joined for char in _SPECIAL):
        return column
    return column.str.translate(_ESCAPES)


def write_tsv(frame: pd.DataFrame, path: str) -> None:
    """The frame as LOAD DATA's default text format: tab-separated, backslash escapes, \\N for NULL.

    Arrow's C++ writer does it about five times faster than pandas; values it will not write unquoted
    (text holding a double quote) or types it does not know go through pandas instead."""
    prepared = frame.assign(
        **{
            c: frame[c].astype("datetime64[s]") if frame[c].dtype.kind == "M" else _escaped(frame[c])
            for c in frame.columns
            if frame[c].dtype.kind == "M" or pd.api.types.infer_dtype(frame[c], skipna=True) == "string"
        }
    )
    try:
        pa_csv.write_csv(pa.Table.from_pandas(prepared, preserve_index=False), path, _ARROW_TSV)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        prepared.to_csv(
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


def load_tsv(conn: pymysql.connections.Connection, table: str, columns: Sequence[str], path: str, rows: int) -> int:
    """LOAD DATA LOCAL INFILE of a file `write_tsv` wrote; exactly `rows` rows must arrive, without warnings.
    Patient: the server answers only once the whole batch is loaded."""
    with tidb.patient(conn), conn.cursor() as cur:
        loaded = cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({_quoted(columns)})",
            (path,),
        )
        # LOCAL turns bad values into warnings (truncated, clamped, defaulted): treat them as errors.
        cur.execute("SHOW WARNINGS LIMIT 3")
        warnings = cur.fetchall()
    if warnings or loaded != rows:
        detail = "; ".join(str(w[2]) for w in warnings) if warnings else f"{loaded} of {rows} rows"
        raise EcomError(f"loading {table} was not exact ({detail})", "fix the data or the table definition")
    return loaded


@dataclass
class _Rendered:
    table: str
    frame: pd.DataFrame
    path: str


def _load_rendered(conn: pymysql.connections.Connection, batch: _Rendered) -> int:
    columns = list(batch.frame.columns)
    if conn not in _LOCAL_INFILE_OFF:
        try:
            return load_tsv(conn, batch.table, columns, batch.path, len(batch.frame))
        except pymysql.err.MySQLError as exc:
            if not (exc.args and exc.args[0] in _LOCAL_INFILE_REFUSED):
                raise
            _LOCAL_INFILE_OFF.add(conn)  # the server said no: stay on INSERTs for this connection
    frame = batch.frame
    rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
    return insert_rows(conn, batch.table, columns, list(rows))


_TEMP_PREFIX = "ecom_load_"
_swept = False


def sweep_dead_files() -> list[str]:
    """Remove the load files of processes that no longer run (a `kill -9` skips every cleanup); once per
    process. Each file is named after its process id, so a live run's files are never touched."""
    global _swept
    if _swept:
        return []
    _swept = True
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*_*.tsv"):
        pid = path.name.removeprefix(_TEMP_PREFIX).split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _render(table: str, frame: pd.DataFrame) -> _Rendered:
    sweep_dead_files()
    fd, path = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}_", suffix=".tsv")
    os.close(fd)
    try:
        write_tsv(frame, path)
    except BaseException:
        os.unlink(path)
        raise
    return _Rendered(table, frame, path)


def load_frame(conn: pymysql.connections.Connection, table: str, frame: pd.DataFrame) -> int:
    """Load a DataFrame into `table` (columns by name) in bulk; returns the rows loaded.

    The caller owns the transaction: with autocommit off, a failure leaves nothing behind.
    """
    if frame.empty:
        return 0
    batch = _render(table, frame)
    try:
        return _load_rendered(conn, batch)
    finally:
        os.unlink(batch.path)


_DONE = object()


def load_batches(
    conn: pymysql.connections.Connection, batches: Iterable[tuple[str, pd.DataFrame]], ahead: int = 2
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Load each (table, frame) in order, yielding it once loaded. Up to `ahead` batches are produced and
    rendered meanwhile by a thread: the server loads while the client generates (both sides then run at
    once, on two cores). Stopping early (an error, the caller closing the iterator, or the user's Ctrl-C,
    which the thread notices between batches even while the caller still holds the iterator) stops the
    thread."""
    ready: queue.Queue[object] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def halted() -> bool:
        return stop.is_set() or interrupt.requested()

    def offer(item: object) -> bool:
        """Queue `item` (waiting while the queue is full) unless the consumer or the user stopped."""
        while not halted():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for table, frame in batches:
                if halted():
                    return
                if not frame.empty:
                    rendered = _render(table, frame)
                    if not offer(rendered):
                        os.unlink(rendered.path)
                        return
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    worker = threading.Thread(target=produce, name="ecom-bulk-render", daemon=True)
    worker.start()
    try:
        while (item := _next(ready)) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Rendered)
            try:
                with interrupt.also(lambda: _cut(conn)):
                    _load_rendered(conn, item)
            finally:
                os.unlink(item.path)
            yield item.table, item.frame
    finally:
        stop.set()
        while worker.is_alive():  # at most the batch it is producing: it checks `stop` before the next
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
                leftover = ready.get(timeout=0.1)
                if isinstance(leftover, _Rendered):
                    os.unlink(leftover.path)
        worker.join()
        while not ready.empty():
            leftover = ready.get_nowait()
            if isinstance(leftover, _Rendered):
                os.unlink(leftover.path)


def _cut(conn: pymysql.connections.Connection) -> None:
    """Shut the connection's socket down. A Ctrl-C in the middle of a LOAD DATA LOCAL packet leaves the
    server waiting for the rest of it, and pymysql, on its way out, waiting for the server's answer (until
    the read timeout): cut, both give up at once."""
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _next(ready: queue.Queue[object]) -> object:
    """The next item the producer queued; a user's interrupt ends the wait (the producer has stopped)."""
    while True:
        with contextlib.suppress(queue.Empty):
            return ready.get(timeout=0.1)
        if interrupt.requested():
            raise KeyboardInterrupt
