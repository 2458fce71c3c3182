"""Order-independent fingerprints of rows, so TiDB and the warehouse can be compared without sorting.

A day's fingerprint is (rows, amount in cents, checksum), where the checksum is the sum, modulo 2^64, of
a 64-bit hash of each row's canonical form. Sums commute, so chunks, batches and both engines' row orders
give the same result; one changed, missing or extra row changes it. Rows are hashed here, in Python,
rather than by each engine's own hash function, because no hash function is common to TiDB, MySQL,
MariaDB, Snowflake and DuckDB.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

_MASK32 = np.uint64(0xFFFFFFFF)


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
    if column.dtype == object:  # Decimal or int objects (NUMBER columns): exact, even beyond 2^53
        return np.fromiter((int(v) for v in column), dtype=np.int64, count=len(column))
    return column.to_numpy(dtype=np.int64)


def _canonical(frame: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """The same values get the same dtypes whichever engine and driver produced them.

    `columns` maps each column to its SQL type; NUMBER columns must have scale 0 (money travels as cents).
    """
    canonical = {}
    for name, sql_type in columns.items():
        column = frame[name]
        if sql_type.startswith("TIMESTAMP"):  # to whole seconds: the business tables keep seconds
            canonical[name] = pd.to_datetime(column).to_numpy(dtype="datetime64[s]").view(np.int64)
        elif sql_type.startswith("VARCHAR"):  # NULL is told from every string by a flag of its own
            canonical[name] = column.where(column.notna(), "").astype(object)
            canonical[f"{name} IS NULL"] = column.isna().to_numpy(dtype=np.int64)
        else:
            canonical[name] = _int64(column)
    return pd.DataFrame(canonical)


def by_day(
    frame: pd.DataFrame, columns: Mapping[str, str], day: pd.Series, cents: pd.Series | None = None
) -> dict[dt.date, Fingerprint]:
    """Fingerprints of the frame's rows per day (`day` gives each row's business day)."""
    if frame.empty:
        return {}
    # categorize=False: factorizing first makes "" and "\x00" one category (so one hash) in pandas 2.3
    hashes = pd.util.hash_pandas_object(_canonical(frame, columns), index=False, categorize=False).to_numpy()
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
