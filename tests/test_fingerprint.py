"""The row fingerprints that reconcile TiDB with the warehouse: equal for the same rows however they
arrive, different for any changed, missing or extra row."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd

from loaders.fingerprint import Fingerprint, by_day

TYPES = {"ID": "NUMBER(19,0)", "NOTE": "VARCHAR", "AT": "TIMESTAMP_NTZ", "CENTS": "NUMBER(19,0)"}
DAY = dt.date(2026, 3, 1)


def rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": [1, 2, 3, 2**62 + 1],
            "NOTE": ["a", "", None, "é 'quoted'"],
            "AT": [
                dt.datetime(2026, 3, 1, 0, 0, 0),
                None,
                dt.datetime(2026, 3, 1, 23, 59, 59),
                dt.datetime(2026, 3, 1),
            ],
            "CENTS": [100, 250, 0, 999_999_999_999],
        }
    )


def prints(frame: pd.DataFrame) -> Fingerprint:
    return by_day(frame, TYPES, pd.Series(DAY, index=frame.index), frame["CENTS"])[DAY]


def test_order_and_chunking_do_not_matter() -> None:
    frame = rows()
    whole = prints(frame)
    assert prints(frame.iloc[::-1].reset_index(drop=True)) == whole
    assert prints(frame.iloc[:2]) + prints(frame.iloc[2:].reset_index(drop=True)) == whole
    assert (whole.rows, whole.cents) == (4, 100 + 250 + 999_999_999_999)


def test_driver_types_do_not_matter() -> None:
    """The warehouse connector returns NUMBER as Decimal objects and timestamps as datetime64."""
    frame = rows()
    other = frame.assign(
        ID=[Decimal(v) for v in frame["ID"]],
        CENTS=[Decimal(v) for v in frame["CENTS"]],
        AT=pd.to_datetime(frame["AT"]),
    )
    assert prints(other) == prints(frame)


def test_any_change_is_seen() -> None:
    frame = rows()
    whole = prints(frame)
    changed = [
        frame.assign(NOTE=["a", None, None, "é 'quoted'"]),  # empty string became NULL
        frame.assign(NOTE=["a", "\x00", None, "é 'quoted'"]),  # pandas' categorize=True confuses these two
        frame.assign(AT=[dt.datetime(2026, 3, 1, 0, 0, 1), None, dt.datetime(2026, 3, 1, 23, 59, 59), DAY]),
        frame.assign(ID=[1, 2, 3, 2**62 + 2]),  # beyond float precision
        frame.iloc[:3],  # a row missing
        pd.concat([frame, frame.iloc[:1]], ignore_index=True),  # a row doubled
    ]
    for other in changed:
        assert prints(other).checksum != whole.checksum


def test_swapped_values_between_rows_are_seen() -> None:
    """Per-column sums would not notice two rows exchanging a value; row hashes do."""
    frame = rows()
    swapped = frame.assign(CENTS=[250, 100, 0, 999_999_999_999])
    assert prints(swapped).cents == prints(frame).cents
    assert prints(swapped).checksum != prints(frame).checksum


def test_days_are_kept_apart() -> None:
    frame = rows()
    days = pd.Series([DAY, DAY, DAY + dt.timedelta(days=1), DAY], index=frame.index)
    per_day = by_day(frame, TYPES, days, frame["CENTS"])
    assert sorted(per_day) == [DAY, DAY + dt.timedelta(days=1)]
    assert per_day[DAY] + per_day[DAY + dt.timedelta(days=1)] == prints(frame)


def _reference_text_hash(text: str) -> int:
    """The row hash's text rule, one byte at a time in plain Python: FNV-1a 64, then the length mixed in."""
    mask = 2**64 - 1
    value = 0xCBF29CE484222325
    data = text.encode()
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & mask
    value ^= len(data)
    value ^= value >> 30
    value = (value * 0xBF58476D1CE4E5B9) & mask
    value ^= value >> 27
    value = (value * 0x94D049BB133111EB) & mask
    return value ^ (value >> 31)


def test_text_hash_is_the_documented_algorithm() -> None:
    """Purges store checksums for good: the vectorised hash must equal the spelled-out one, byte for byte."""
    from loaders.fingerprint import _text_hashes

    values = ["", "a", "é 'quoted'", "a\x00", "\x00", "x" * 300, "日本語"]
    vectorised = _text_hashes(pd.Series(values, dtype=object))
    assert [int(h) for h in vectorised] == [_reference_text_hash(v) for v in values]
    assert len(set(vectorised.tolist())) == len(values)


def test_the_checksum_of_known_rows_never_changes() -> None:
    """A change to the row hash would make every stored purge proof disagree with the warehouse."""
    assert prints(rows()).hex == "52cfda4f6e37d99d"


def test_null_numbers_are_told_from_zero() -> None:
    """A NULL in a NUMBER column (a hand-edited warehouse, say) is hashed, not a crash, and is not 0."""
    frame = rows()
    with_null = frame.assign(CENTS=[Decimal(100), None, Decimal(0), Decimal(999_999_999_999)])
    with_zero = frame.assign(CENTS=[100, 0, 0, 999_999_999_999])
    assert prints(with_null).checksum != prints(with_zero).checksum
