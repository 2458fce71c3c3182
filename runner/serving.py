"""Read-side queries over TiDB's serving views and tables: what apps and the CLI show."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runner import tidb
from runner.config import Settings
from runner.errors import EcomError


@dataclass(frozen=True)
class Table:
    """A titled result set, rendered by the CLI as a table or JSON."""

    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def query(settings: Settings, title: str, sql: str, params: tuple[Any, ...] = (), note: str = "") -> Table:
    # interactive: a person waits for it, so the server itself stops a query that runs too long
    with tidb.connection(settings, settings.tidb.database, interactive=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        columns = [d[0] for d in cur.description]
        return Table(title, columns, list(cur.fetchall()), note)


def _require_user(settings: Settings, user_id: int) -> None:
    db = settings.tidb.database
    if not 0 < user_id < 2**63:
        raise EcomError(f"user id {user_id} is out of range", "pass a positive user id")
    if not query(settings, "", f"SELECT 1 FROM `{db}`.users WHERE id = %s", (user_id,)).rows:
        raise EcomError(f"user {user_id} does not exist", "pick an id from the users table (`ecom status`)")


def recommend(settings: Settings, user_id: int) -> Table:
    _require_user(settings, user_id)
    db = settings.tidb.database
    table = query(
        settings,
        f"Recommendations for user {user_id}",
        f"SELECT `rank`, item_id, item_name, item_type, item_price, units_sold, user_label, label_source "
        f"FROM `{db}`.recommendations WHERE user_id = %s ORDER BY `rank`",
        (user_id,),
    )
    if not table.rows:
        raise EcomError("there are no hot items to recommend yet", "run `ecom transform` and `ecom export`")
    label, source = table.rows[0][-2], table.rows[0][-1]
    note = (
        f"user {user_id} is labelled {label!r}: {label} tier"
        if source == "labelled"
        else f"user {user_id} has no label yet (no archived order): low tier by default"
    )
    # The label columns are the same on every row: they go into the note instead.
    return Table(table.title, table.columns[:-2], [row[:-2] for row in table.rows], note)


def orders(settings: Settings, user_id: int, limit: int = 20) -> Table:
    _require_user(settings, user_id)
    db = settings.tidb.database
    return query(
        settings,
        f"Orders of user {user_id} (newest first)",
        f"SELECT order_id, ordered_at, item_name, item_type, item_count, amount, express_status, carrier, "
        f"tracking_no, express_updated_at FROM `{db}`.order_tracking WHERE user_id = %s "
        f"ORDER BY ordered_at DESC, order_id DESC LIMIT %s",
        (user_id, limit),
    )


def bill(settings: Settings, user_id: int, month: str | None = None) -> Table:
    if month is not None and not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", month):
        raise EcomError(f"--month {month!r} is not a month", "use YYYY-MM, e.g. 2026-03")
    _require_user(settings, user_id)
    db = settings.tidb.database
    where, params = ("AND month = %s", (user_id, month)) if month else ("", (user_id,))
    table = query(
        settings,
        f"Monthly bills of user {user_id}",
        f"SELECT month, order_count, units, total_amount, as_of_date FROM `{db}`.monthly_bills "
        f"WHERE user_id = %s {where} ORDER BY month",
        params,
    )
    if not table.rows:
        what = f"in {month}" if month else "in the exported bills"
        return Table(table.title, table.columns, [], f"no bill for user {user_id} {what}")
    return table


def dashboard(settings: Settings) -> list[Table]:
    db = settings.tidb.database
    return [
        query(
            settings,
            "Today",
            f"SELECT business_date, total_amount, order_count, customer_count FROM `{db}`.today_sales",
        ),
        query(
            settings,
            "Today by item type",
            f"SELECT item_type, total_amount, order_count, customer_count "
            f"FROM `{db}`.today_sales_by_type ORDER BY total_amount DESC",
        ),
        query(
            settings,
            "Today by hour",
            f"SELECT hour_of_day, order_count, total_amount, running_orders, "
            f"running_amount FROM `{db}`.today_sales_by_hour ORDER BY hour_of_day",
        ),
        query(
            settings,
            "Hot items, high tier (last 7 days)",
            f"SELECT `rank`, item_id, item_name, item_price, "
            f"units_sold FROM `{db}`.hot_items WHERE item_label = 'high' ORDER BY `rank`",
        ),
        query(
            settings,
            "Hot items, low tier (last 7 days)",
            f"SELECT `rank`, item_id, item_name, item_price, "
            f"units_sold FROM `{db}`.hot_items WHERE item_label = 'low' ORDER BY `rank`",
        ),
    ]


def sample_users(settings: Settings) -> dict[str, int]:
    """One labelled user per label (the most active), for the demo."""
    db = settings.tidb.database
    found = {}
    for label in ("high", "low"):
        rows = query(
            settings,
            "",
            f"SELECT user_id FROM `{db}`.user_labels WHERE user_label = %s ORDER BY order_count DESC, user_id LIMIT 1",
            (label,),
        ).rows
        if rows:
            found[label] = int(rows[0][0])
    return found
