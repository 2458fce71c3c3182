"""The fast TiDB reader against a reference, on hostile rows in real tables on the server.

The fast reader (`archive.read_frames`) has the server render each row as a CSV line and Arrow parse
the lines; the reference is the driver's own decoding of the same SELECT (`Extract.select`, `to_frame`).
Both must give identical frames (dtypes, values, NULL vs empty string) and identical fingerprints.
Archive and verify share the fast reader, so a bug in it would make both agree on the same wrong rows:
this is the test that sees it, and `test_the_comparison_catches_a_broken_reader` shows that it can.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loaders import archive, fingerprint
from loaders.archive import Extract
from loaders.generate import GenerateSpec
from runner import pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, make_settings

# Text that CSV, NULL markers, number sniffing, trimming or C strings could get wrong.
HOSTILE_TEXT = [
    "",
    " ",
    "  padded  ",
    "NULL",
    "null",
    "\\N",
    "N",
    "None",
    "NaN",
    "nan",
    "#N/A",
    "007",
    "1e5",
    "-0",
    "true",
    '"',
    '""',
    '"quoted"',
    "'",
    "\\",
    "\\\\",
    ",",
    "a,b",
    '"a","b"',
    "\t",
    "\n",
    "\r",
    "\r\n",
    "line\nbreak",
    "\x00",
    "a\x00b",
    "\x1a",
    "\x7f",
    "😀",
    "日本語",
    "é",
    "\u2028",
    "\ufeffbom",
]
# A nullable BIGINT comes as float64 (both readers): hashing one near 2^63 casts out of range, alike in both.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
SMALL_CHUNKS = 4  # rows per chunk: most examples span several chunks, some end in a partial one
DAY_START, DAY_END = dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 3)  # the daily extracts' [start, end)

texts = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.lists(st.sampled_from(HOSTILE_TEXT), max_size=4).map("".join),
)
# pandas holds timestamps in nanoseconds: both readers refuse what lies beyond (see the test below)
datetimes = st.datetimes(min_value=dt.datetime(1678, 1, 1), max_value=dt.datetime(2261, 12, 31))
bigints = st.integers(-(2**63), 2**63 - 1)
ints = st.integers(-(2**31), 2**31 - 1)


def bounded(examples: int) -> Any:
    return hsettings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ folder in the repository
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(autouse=True, scope="module")
def small_chunks() -> Iterator[None]:
    """Small chunks for every read here, so chunk edges (and chunks of only NULLs) are crossed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(archive, "FETCH_ROWS", SMALL_CHUNKS)
        yield


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The business schema, plus a table with a nullable column of every type the reader handles."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp("reader")), "reader")
    tidb.init_schema(settings)
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE hostile (id BIGINT NOT NULL PRIMARY KEY, big BIGINT NULL, small INT NULL, "
            "txt VARCHAR(120) NULL, txt2 VARCHAR(120) NOT NULL, at DATETIME NULL, at2 DATETIME NOT NULL)"
        )
    yield settings
    drop_databases(settings)


def hostile_extract(settings: Settings) -> Extract:
    """An extract of the hostile table, ordered so that both readers cut the same chunks."""
    return Extract(
        "HOSTILE",
        "ID NUMBER(19,0), BIG NUMBER(19,0), SMALL NUMBER(10,0), TXT VARCHAR, TXT2 VARCHAR, "
        "AT TIMESTAMP_NTZ, AT2 TIMESTAMP_NTZ",
        ("id", "big", "small", "txt", "txt2", "at", "at2"),
        f"FROM `{settings.tidb.database}`.hostile ORDER BY id",
        publish="",
    )


def fast_frames(settings: Settings, extract: Extract) -> list[pd.DataFrame]:
    conn = tidb.connect(settings, settings.tidb.database, streaming=True)
    try:
        with conn.cursor() as cur:
            return list(archive.read_frames(cur, extract, DAY_START, DAY_END))
    finally:
        conn.close()


def reference_frames(settings: Settings, extract: Extract) -> list[pd.DataFrame]:
    """The driver decodes every value (the reader as it was before the fast one)."""
    conn = tidb.connect(settings, settings.tidb.database, streaming=True)
    try:
        with conn.cursor() as cur:
            cur.execute(extract.select, (DAY_START, DAY_END) if extract.day_column else ())
            frames = []
            while rows := cur.fetchmany(archive.FETCH_ROWS):
                frames.append(archive.to_frame(extract, rows))
            return frames
    finally:
        conn.close()


def assert_same(fast: pd.DataFrame, reference: pd.DataFrame, types: dict[str, str]) -> None:
    assert list(fast.columns) == list(reference.columns)
    assert dict(fast.dtypes) == dict(reference.dtypes)
    pd.testing.assert_frame_equal(fast, reference, check_exact=True)
    for column in fast.columns:
        if fast[column].dtype == object:  # stricter than assert_frame_equal: None is not NaN, '1' is not 1
            assert [(type(v), v) for v in fast[column]] == [(type(v), v) for v in reference[column]], column
    assert fingerprint.row_hashes(fast, types).tolist() == fingerprint.row_hashes(reference, types).tolist()


def compare(settings: Settings, extract: Extract, sort_by: str | None = None) -> int:
    """Read with both readers and require the same chunks (or, unordered, the same rows). Returns rows."""
    fast, reference = fast_frames(settings, extract), reference_frames(settings, extract)
    if sort_by is None:
        assert [len(f) for f in fast] == [len(f) for f in reference]
        for fast_chunk, reference_chunk in zip(fast, reference, strict=True):
            assert_same(fast_chunk, reference_chunk, extract.column_types)
    else:  # no ORDER BY: the server may cut the chunks differently, so whole results are compared
        assert sum(map(len, fast)) == sum(map(len, reference))
        if fast:
            whole = [pd.concat(f, ignore_index=True).sort_values(sort_by, ignore_index=True) for f in (fast, reference)]
            assert_same(*whole, extract.column_types)
    prints: list[dict[dt.date, fingerprint.Fingerprint]] = [{}, {}]
    for into, frames in zip(prints, (fast, reference), strict=True):
        for f in frames:
            fingerprint.merge(into, extract.fingerprints(f, pd.Series(dt.date(2026, 3, 1), index=f.index)))
    assert prints[0] == prints[1]
    return sum(len(f) for f in fast)


def replace_rows(settings: Settings, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table}")
        if rows:
            marks = ", ".join(["%s"] * len(rows[0]))
            cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


hostile_rows = st.lists(
    st.tuples(
        bigints,
        st.none() | bigints,
        st.none() | ints,
        st.none() | texts,
        texts,
        st.none() | datetimes,
        datetimes,
    ),
    max_size=14,
    unique_by=lambda row: row[0],
)


@given(rows=hostile_rows)
@bounded(120)
def test_hostile_rows_read_the_same(shop: Settings, rows: list[tuple[Any, ...]]) -> None:
    replace_rows(shop, "hostile", "id, big, small, txt, txt2, at, at2", rows)
    assert compare(shop, hostile_extract(shop)) == len(rows)


in_day = st.datetimes(min_value=DAY_START - dt.timedelta(hours=1), max_value=DAY_END + dt.timedelta(hours=1))
cents = st.integers(-999_999_999_999, 999_999_999_999).map(lambda c: Decimal(c) / 100)  # DECIMAL(12,2)
prices = st.integers(0, 99_999_999).map(lambda c: Decimal(c) / 100)  # DECIMAL(10,2)


@st.composite
def business_rows(draw: st.DrawFn) -> dict[str, list[tuple[Any, ...]]]:
    ids = draw(st.lists(st.integers(1, 2**63 - 1), max_size=10, unique=True))
    orders = [(i, draw(bigints), draw(bigints), draw(ints), draw(cents), draw(in_day)) for i in ids]
    shipped = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    express = [
        (
            n + 1,
            order_id,
            draw(texts),
            draw(texts),
            draw(texts.filter(lambda t: len(t) <= 20)),
            draw(st.none() | datetimes),
            draw(st.none() | datetimes),
            draw(datetimes),
        )
        for n, order_id in enumerate(shipped)
    ]
    people = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8, unique=True))
    users = [(i, draw(texts), draw(texts), draw(texts), draw(datetimes)) for i in people]
    goods = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8, unique=True))
    items = [(i, draw(texts), draw(texts.filter(lambda t: len(t) <= 50)), draw(prices), draw(datetimes)) for i in goods]
    return {"orders": orders, "express": express, "users": users, "items": items}


@given(data=business_rows())
@bounded(40)
def test_the_archive_extracts_read_the_same(shop: Settings, data: dict[str, list[tuple[Any, ...]]]) -> None:
    """The real extracts (cents from DECIMAL, the express join, the day range) on hostile business rows."""
    db, express_db = shop.tidb.database, shop.tidb.express_database
    replace_rows(shop, "orders", "id, user_id, item_id, item_count, amount, created_at", data["orders"])
    replace_rows(
        shop,
        f"`{express_db}`.express",
        "id, order_id, carrier, tracking_no, status, shipped_at, delivered_at, updated_at",
        data["express"],
    )
    replace_rows(shop, "users", "id, name, email, city, created_at", data["users"])
    replace_rows(shop, "items", "id, name, item_type, price, created_at", data["items"])
    # (which orders fall in the day is the server's to say: it rounds fractional seconds its own way)
    snapshots = {"USERS": len(data["users"]), "ITEMS": len(data["items"])}
    for extract in archive.extracts(db, express_db):
        read = compare(shop, extract, sort_by="ID")
        assert read == snapshots.get(extract.table, read)


def test_values_beyond_nanoseconds_fail_in_both(shop: Settings) -> None:
    """DATETIME reaches years 1000..9999, pandas' nanoseconds 1677..2262: both readers refuse, neither wraps."""
    for year in (1000, 9999):
        replace_rows(
            shop,
            "hostile",
            "id, big, small, txt, txt2, at, at2",
            [(1, None, None, None, "", dt.datetime(year, 6, 1), dt.datetime(2026, 1, 1))],
        )
        for read in (fast_frames, reference_frames):
            with pytest.raises(pd.errors.OutOfBoundsDatetime):
                read(shop, hostile_extract(shop))


FIXED_ROWS = [
    (1, None, 7, None, "", None, dt.datetime(2026, 1, 1)),
    (2, 2**62 + 1, None, "", "  padded  ", dt.datetime(2026, 1, 1, 0, 0, 1), dt.datetime(2026, 1, 2)),
    (3, 5, -1, "NULL", '"a","b"\r\n', None, dt.datetime(2026, 1, 3)),
    (4, None, None, "\\N", "a\x00b", None, dt.datetime(2026, 1, 4)),
]


def _broken(render: Callable[[str, str], str]) -> Callable[[str, str], str]:
    def field(expr: str, sql_type: str) -> str:
        return render(expr, sql_type) if sql_type.startswith("VARCHAR") else original(expr, sql_type)

    original = archive._csv_field
    return field


@pytest.mark.parametrize(
    "render",
    [
        # NULL written as the empty string: a NULL/'' mix-up
        lambda expr, _t: f"CONCAT('\"', REPLACE(IFNULL({expr}, ''), '\"', '\"\"'), '\"')",
        # padding trimmed
        lambda expr, _t: f"IFNULL(CONCAT('\"', REPLACE(TRIM({expr}), '\"', '\"\"'), '\"'), '')",
        # the NUL character dropped
        lambda expr, _t: f"IFNULL(CONCAT('\"', REPLACE(REPLACE({expr}, CHAR(0), ''), '\"', '\"\"'), '\"'), '')",
    ],
    ids=["null-as-empty", "trimmed", "nul-dropped"],
)
def test_the_comparison_catches_a_broken_reader(
    shop: Settings, monkeypatch: pytest.MonkeyPatch, render: Callable[[str, str], str]
) -> None:
    """A reader that parses cleanly but changes a value must fail the comparison (not pass it unseen)."""
    replace_rows(shop, "hostile", "id, big, small, txt, txt2, at, at2", FIXED_ROWS)
    assert compare(shop, hostile_extract(shop)) == len(FIXED_ROWS)  # the real reader passes
    monkeypatch.setattr(archive, "_csv_field", _broken(render))
    with pytest.raises(AssertionError):
        compare(shop, hostile_extract(shop))


def test_a_row_the_server_cannot_render_stops_the_read(shop: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NULL line (a field rendered as NULL) is an error, never a row silently dropped or shifted."""
    replace_rows(shop, "hostile", "id, big, small, txt, txt2, at, at2", FIXED_ROWS)
    monkeypatch.setattr(archive, "_csv_field", lambda expr, _t: expr)  # NULL fields left NULL
    with pytest.raises(EcomError, match="as NULL"):
        fast_frames(shop, hostile_extract(shop))


# ------------------------------------------------------------------ the read-back of RAW, in slices of ids

SMALL_SHOP = GenerateSpec(users=300, items=30, orders=1_500, days=3, seed=11)


def test_the_read_back_in_slices_sees_every_row(server: TiDBConfig, tmp_path: Path) -> None:
    """The stand-in hands a result over all at once, so the check reads RAW back in slices of ids: the
    slices must cover every row once, a hand-inserted row with no id included, and the archive's own
    check must pass with many small slices."""
    settings = make_settings(server, tmp_path, "slices")
    try:
        tidb.init_schema(settings)
        pipeline.run_generate(settings, SMALL_SHOP)
        first, last = settings.today() - dt.timedelta(days=SMALL_SHOP.days), settings.today() - dt.timedelta(days=1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(archive, "STANDIN_READBACK_ROWS", 97)  # every day and snapshot in several slices
            pipeline.run_archive(settings, first, last)
        with warehouse.session(settings) as cfg:
            conn = warehouse.connect(cfg)
            try:
                conn.cursor().execute("INSERT INTO ORDERS (ID, AMOUNT, ORDER_DATE) VALUES (NULL, 1.00, %s)", (last,))
                conn.cursor().execute("INSERT INTO USERS (ID, NAME) VALUES (NULL, 'ghost')")
                for extract in archive.extracts("_", "_"):
                    whole = archive.read_back(conn, cfg, extract, first, last)
                    with pytest.MonkeyPatch.context() as patch:
                        patch.setattr(archive, "STANDIN_READBACK_ROWS", 97)
                        assert archive._id_slices(cfg, 1_000) == [(part, 11) for part in range(11)]
                        assert archive.read_back(conn, cfg, extract, first, last) == whole, extract.table
                    where = " WHERE ORDER_DATE BETWEEN %s AND %s" if extract.day_column else ""
                    cur = conn.cursor()
                    cur.execute(f"SELECT COUNT(*) FROM {extract.table}{where}", (first, last) if where else ())
                    assert sum(p.rows for p in whole.values()) == cur.fetchone()[0]  # the rows with no id too
            finally:
                conn.close()
    finally:
        drop_databases(settings)


# --------------------------------------------------------------------- the fingerprint's fast text hashes

hashable_values = st.lists(
    st.one_of(
        texts,
        st.text(max_size=300),
        st.none(),
        st.just(math.nan),
        st.just(pd.NA),
        st.binary(max_size=4),  # not text: hashed as the empty string, as ever
        st.integers(),
    ),
    max_size=30,
).map(lambda values: pd.Series(values, dtype=object))


@given(column=hashable_values)
@bounded(300)
def test_text_hashes_in_arrow_equal_the_byte_by_byte_way(column: pd.Series) -> None:
    encoded = [v.encode() if isinstance(v, str) else b"" for v in column]
    assert fingerprint._text_hashes(column).tolist() == fingerprint._text_hashes_of(encoded).tolist()


def test_text_hashes_of_values_that_are_not_text() -> None:
    """Whatever is not a string hashes as the empty string, as it always did (Arrow would encode bytes)."""
    for values in (["a", 1, b"x", None, Decimal(2)], ["a", b"x"]):
        expected = fingerprint._text_hashes_of([v.encode() if isinstance(v, str) else b"" for v in values])
        assert fingerprint._text_hashes(pd.Series(values, dtype=object)).tolist() == expected.tolist()


def test_the_csv_select_keeps_the_select_columns() -> None:
    """The fast reader and the reference read the same expressions from the same source."""
    for extract in archive.extracts("d", "e"):
        assert extract.select.endswith(extract.source)
        assert extract.csv_select.endswith(extract.source)
        for expr in extract.columns:
            assert expr in extract.csv_select
        unknown = dataclasses.replace(
            extract, stage_columns=extract.stage_columns + ", X FLOAT", columns=(*extract.columns, "x")
        )
        with pytest.raises(ValueError, match="no CSV form for FLOAT"):
            unknown.csv_select  # noqa: B018
