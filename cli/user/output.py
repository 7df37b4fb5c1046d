"""How the user commands print: rich tables for people, or `--output json`, the API's own answer."""

import enum
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(enum.StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Format, typer.Option("--output", "-o", help="table for people, json for the API's answer unchanged")
]


# Where the output is not a terminal (a pipe, a file, a CI log), rich would assume 80 columns and squeeze
# the other columns of a table of ids to nothing: such output gets this many.
UNBOUNDED_WIDTH = 200


def console() -> Console:
    # Made per use, so it writes to the sys.stdout of the moment (a test runner swaps it).
    width = None if sys.stdout.isatty() else UNBOUNDED_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def emit(response: httpx.Response, output: Format, render: Callable[[Any], None]) -> None:
    """Print the answer: its body unchanged for json, else what `render` makes of it."""
    if output is Format.json:
        typer.echo(response.text)
    else:
        render(response.json())


def when(value: str | None) -> str:
    """An RFC 3339 time as a person reads it (still UTC, said so)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.utcoffset() is not None else "")


def credits(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


class PlainTable(Table):
    """A table whose cells are shown as they are: text from the API (names, notes, messages) is never
    read as rich markup, so a note saying "[urgent]" keeps its brackets."""

    def add_row(self, *values: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(v) if isinstance(v, str) else v for v in values), **kwargs)


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose id columns are never cut (people copy ids into the next command)."""
    t = PlainTable(title=title, title_justify="left", header_style="bold")
    for column in columns:
        if column == "ID" or column.endswith(" ID"):
            t.add_column(column, no_wrap=True, min_width=36)
        else:
            t.add_column(column)
    return t


def details(rows: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    """One object's fields as `name  value` lines."""
    t = PlainTable(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for name, value in rows:
        t.add_row(name, "-" if value is None or value == "" else str(value))
    return t


def size(s: dict[str, Any]) -> str:
    return f"{s['numberOfNodes']} x {s['nodeType']}, {s.get('storage', '?')} GB"


def items(entries: list[dict[str, Any]]) -> str:
    """Tools or services as `name@version` (how the commands take them)."""
    return ", ".join(f"{e['name']}@{e['version']}" for e in entries) or "-"


def who(user: dict[str, Any] | None) -> str:
    return "-" if not user else f"{user['name']} <{user['email']}>"
