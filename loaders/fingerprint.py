"""Order-independent fingerprints of rows, so TiDB and the warehouse can be compared without sorting.

A day's fingerprint is (rows, amount in cents, checksum), where the checksum is the sum, modulo 2^64, of
a 64-bit hash of each row's canonical form. Sums commute, so chunks, batches and both engines' row orders
give the same result; one changed, missing or extra row changes it. Rows are hashed here, in Python,
rather than by each engine's own hash function, because no hash function is common to TiDB, MySQL,
MariaDB, Snowflake and DuckDB.

The row hash is spelled out here (not borrowed from a library whose internals may change), because the
purge stores checksums for good: text is hashed with FNV-1a 64 over its UTF-8 bytes, then its length
mixed in; integers and timestamps (whole seconds since 1970) are mixed with splitmix64's finaliser; text
and integers are followed by a NULL flag (0 or 1, mixed the same way); a
row folds its columns left to right as h = mix(h * FNV_PRIME ^ column_hash). All arithmetic is modulo 2^64.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

_MASK32 = np.uint64(0xFFFFFFFF)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@dataclass(frozen=True)
class Fingerprint:
    rows: int = 0
    cents: int = 0
    checksum: int = 0

    def __add__(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(self.rows + other.rows, self.cents + other.cents, (self.checksum + other.checksum) % 2**64)

    @property
    def hex(self) -> str:
        return f"{self.checksum:016x}"


def _int64(column: pd.Series) -> np.ndarray:
    """Integers exactly, even beyond 2^53 (Decimal or int objects from NUMBER columns); NULL as 0."""
    if column.dtype == object:
        return np.fromiter((0 if v is None else int(v) for v in column), dtype=np.int64, count=len(column))
    if column.dtype.kind == "f":  # a nullable integer column read as floats: exact only below 2^53
        return column.fillna(0).to_numpy(dtype=np.int64)
    return column.to_numpy(dtype=np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed bijection of 64-bit words that spreads every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _text_hashes(column: pd.Series) -> np.ndarray:
    """FNV-1a 64 of each value's UTF-8 bytes, a byte position at a time over all rows, then the length."""
    if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):  # bytes, numbers…: as ever,
        return _text_hashes_of([v.encode() if isinstance(v, str) else b"" for v in column])  # hashed as ""
    # Arrow encodes the strings into one buffer in C (None, NaN and NA become nulls)
    array = pa.array(column, type=pa.large_string(), from_pandas=True)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array) + 1, offset=8 * array.offset)
    data = np.frombuffer(array.buffers()[2] or b"", dtype=np.uint8)
    lengths = np.where(array.is_null().to_numpy(zero_copy_only=False), 0, np.diff(offsets))
    # Longest first: the rows that still have a byte at a position are then a prefix, updated in place.
    order = np.argsort(-lengths, kind="stable")
    starts, ordered = offsets[:-1][order], lengths[order]
    hashes = np.full(len(array), _FNV_OFFSET)
    active = len(array) - np.cumsum(np.bincount(ordered, minlength=1))  # rows longer than each position
    for position, rows in enumerate(active):
        if rows == 0:
            break
        hashes[:rows] ^= data[starts[:rows] + position]
        hashes[:rows] *= _FNV_PRIME
    unsorted = np.empty_like(hashes)
    unsorted[order] = hashes
    return _mix(unsorted ^ lengths.astype(np.uint64))


def _text_hashes_of(encoded: list[bytes]) -> np.ndarray:
    """`_text_hashes` of values already encoded (empty for NULL)."""
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    width = max(int(lengths.max(initial=0)), 1)
    matrix = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)
    hashes = np.full(len(encoded), _FNV_OFFSET)
    for position in range(width):  # one byte column widened at a time: one long value must not widen them all
        byte = matrix[:, position].astype(np.uint64)
        hashes = np.where(lengths > position, (hashes ^ byte) * _FNV_PRIME, hashes)
    return _mix(hashes ^ lengths.astype(np.uint64))


def _column_hashes(frame: pd.DataFrame, columns: Mapping[str, str]) -> list[np.ndarray]:
    """One 64-bit hash per row and column, the same whichever engine and driver produced the values.

    `columns` maps each column to its SQL type; NUMBER columns must have scale 0 (money travels as cents).
    """
    hashes = []
    for name, sql_type in columns.items():
        column = frame[name]
        if sql_type.startswith("TIMESTAMP"):  # to whole seconds: the business tables keep seconds
            stamps = column if column.dtype.kind == "M" else pd.to_datetime(column)
            hashes.append(_mix(stamps.to_numpy(dtype="datetime64[s]").view(np.uint64)))
        elif sql_type.startswith("VARCHAR"):  # NULL is told from every string by a flag of its own
            hashes.append(_text_hashes(column))
            hashes.append(_mix(column.isna().to_numpy(dtype=np.uint64)))
        else:  # NULL is told from 0 by its flag
            hashes.append(_mix(_int64(column).view(np.uint64)))
            hashes.append(_mix(column.isna().to_numpy(dtype=np.uint64)))
    return hashes


def row_hashes(frame: pd.DataFrame, columns: Mapping[str, str]) -> np.ndarray:
    with np.errstate(over="ignore"):  # modulo 2^64 is the point
        hashes = np.zeros(len(frame), dtype=np.uint64)
        for column in _column_hashes(frame, columns):
            hashes = _mix((hashes * _FNV_PRIME) ^ column)
    return hashes


def by_day(
    frame: pd.DataFrame, columns: Mapping[str, str], day: pd.Series, cents: pd.Series | None = None
) -> dict[dt.date, Fingerprint]:
    """Fingerprints of the frame's rows per day (`day` gives each row's business day)."""
    if frame.empty:
        return {}
    hashes = row_hashes(frame, columns)
    # Sum the two 32-bit halves separately: exact in int64 for up to 2^31 rows, no overflow to reason about.
    parts = pd.DataFrame(
        {
            "rows": 1,
            "cents": _int64(cents) if cents is not None else 0,
            "lo": (hashes & _MASK32).astype(np.int64),
            "hi": (hashes >> np.uint64(32)).astype(np.int64),
        }
    )
    sums = parts.groupby(pd.Series(day).to_numpy()).sum()
    return {
        (key.date() if isinstance(key, dt.datetime) else key): Fingerprint(
            int(rows), int(cents_sum), (int(hi) * 2**32 + int(lo)) % 2**64
        )
        for key, rows, cents_sum, lo, hi in sums.itertuples(name=None)
    }


def merge(into: dict[dt.date, Fingerprint], part: dict[dt.date, Fingerprint]) -> None:
    for day, print_ in part.items():
        into[day] = into.get(day, Fingerprint()) + print_
