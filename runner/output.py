"""How results reach people (rich tables) and machines (--json).

Data is data: nothing printed here is read as rich markup or emoji codes, and the characters that would act
on a terminal instead of showing (control characters, bidi overrides) are printed as visible escapes. Only
text the code itself builds carries styles, as `rich.text.Text` spans.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import select
import sys
from typing import IO, Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from runner.serving import Table


def silence(stream: IO[str]) -> None:
    """Point `stream` at /dev/null: its reader is gone (`| head`), so what is still written, and the flush at
    exit, go nowhere instead of failing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor (a test's capture): nothing to redirect
        pass


def reader_gone(stream: IO[str]) -> bool:
    """Whether the pipe `stream` writes into has lost its reader (then silenced): a closed pipe's write end
    polls as an error, a live one does not."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        gone = any(event & (select.POLLERR | select.POLLHUP) for _fd, event in poller.poll(0))
    except (OSError, ValueError):
        return False
    if gone:
        silence(stream)
    return gone


class _Console(Console):
    """A console that stops writing when its reader goes away, instead of rich's exit 1: a closed pipe
    (`ecom recommend 1 | head -2`) is not an error, and the command still finishes what it was doing."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence(self.file)


# Piped output (CI logs, `| less`, `| grep`) gets a page as wide as any table needs instead of rich's 80
# columns: a table takes its natural width (rich tables do not expand), so no cell is folded over two lines.
console = _Console(
    markup=False, emoji=False, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000
)
errors = _Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)

# What a terminal would act on rather than show: C0 controls, DEL, C1 controls (CSI and friends), the bidi
# embeddings, overrides and isolates (they reorder what follows, so a cell could read as something else) and
# the line and paragraph separators (a line break to some terminals and pagers).
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """`text` with every control or reordering character written as its escape (`\\x1b`, `\\n`, `\\u202e`),
    as Python writes it; everything else, backslashes included, is left as it is."""
    return _UNSHOWABLE.sub(_escape, text)


def literal(text: str, style: str = "") -> Text:
    """Text to print as it is (made visible), optionally in one style the code chose."""
    return Text(visible(text), style=style)


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return value


def _cell(value: Any) -> Text:
    if value is None:
        return Text("—")
    if isinstance(value, float | decimal.Decimal):
        return Text(f"{value:,.2f}")
    return literal(str(_plain(value)))


def _json(payload: Any) -> str:
    # ensure_ascii (json's default): every non-ASCII character as \uXXXX, control characters escaped too.
    # The values stay exact for any JSON reader, whatever the terminal's encoding, and a bidi override or a
    # C1 control in the data never reaches a terminal that shows the JSON.
    return json.dumps(payload, indent=2, default=str)


def _emit(text: str) -> None:
    """JSON on stdout, as print does, but a reader that went away ends the output, not the command."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        silence(sys.stdout)


def show(tables: Table | list[Table], as_json: bool = False) -> None:
    tables = tables if isinstance(tables, list) else [tables]
    if as_json:
        payload = [
            {"title": t.title, "note": t.note, "rows": [{k: _plain(v) for k, v in r.items()} for r in t.records()]}
            for t in tables
        ]
        _emit(_json(payload[0] if len(payload) == 1 else payload))
        return
    for t in tables:
        rich_table = RichTable(title=literal(t.title), title_justify="left", show_lines=False)
        for column in t.columns:
            rich_table.add_column(literal(column), overflow="fold")
        for row in t.rows:
            rich_table.add_row(*(_cell(v) for v in row))
        if not t.rows:
            rich_table.caption = Text("(no rows)")
        console.print(rich_table)
        if t.note:
            console.print(literal(t.note))


def dump_json(payload: Any) -> None:
    _emit(json.dumps(payload, indent=2, default=_plain))
