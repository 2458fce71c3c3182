"""How results reach people (rich tables) and machines (--json)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from runner.serving import Table

# Piped output (CI logs, `| less`) gets a wide page instead of rich's 80 columns, so tables do not fold.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # ":x:" in a value stays ":x:"


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | decimal.Decimal):
        return f"{value:,.2f}"
    return str(_plain(value))


def show(tables: Table | list[Table], as_json: bool = False) -> None:
    tables = tables if isinstance(tables, list) else [tables]
    if as_json:
        payload = [
            {"title": t.title, "note": t.note, "rows": [{k: _plain(v) for k, v in r.items()} for r in t.records()]}
            for t in tables
        ]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, default=str))
        return
    for t in tables:
        rich_table = RichTable(title=t.title, title_justify="left", show_lines=False)
        for column in t.columns:
            rich_table.add_column(column, overflow="fold")
        for row in t.rows:
            rich_table.add_row(*(_cell(v) for v in row))
        if not t.rows:
            rich_table.caption = "(no rows)"
        console.print(rich_table)
        if t.note:
            console.print(t.note)


def dump_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=_plain))
