"""Set-based writes: many rows in one statement, and JSON text for json/jsonb parameters.

Hot paths write a batch per statement (`INSERT ... SELECT FROM unnest(...)`), never a
row per round trip. `insert_rows` builds that statement from the column names and
PostgreSQL types, so a store says what it writes, not how the arrays line up. Columns
of type `json` or `jsonb` travel as text arrays cast back to their type: orjson writes
the text several times faster than asyncpg's per-element codec would. A column only ever
read back whole is better `json` (the text, validated) than `jsonb` (decomposed, its keys
sorted, at every insert).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

_JSON = frozenset({"json", "jsonb"})


def json_text(value: object) -> str:
    """JSON text for a json or jsonb parameter."""
    return orjson.dumps(value).decode()


def unnest_select(
    columns: Sequence[tuple[str, str]], *, first: int = 1, in_order: bool = False
) -> str:
    """`SELECT c1, c2::jsonb FROM unnest($1::t1[], $2::text[]) AS t(c1, c2)` for
    (name, type) columns, parameters numbered from `first`; `in_order`: the rows come out
    in array order (`WITH ORDINALITY ... ORDER BY`), for a sequence default that must
    follow the order the rows were given in."""
    names = [name for name, _ in columns]
    arrays = [
        f"${first + i}::{'text' if kind in _JSON else kind}[]"
        for i, (_, kind) in enumerate(columns)
    ]
    picks = [f"{name}::{kind}" if kind in _JSON else name for name, kind in columns]
    source = f"unnest({', '.join(arrays)})"
    if in_order:
        return (
            f"SELECT {', '.join(picks)} FROM {source} WITH ORDINALITY"
            f" AS t({', '.join(names)}, row_number_) ORDER BY row_number_"
        )
    return f"SELECT {', '.join(picks)} FROM {source} AS t({', '.join(names)})"


def column_arrays(
    columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> list[list[Any]]:
    """The rows as one array per column (json and jsonb values as JSON text)."""
    out: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for i, value in enumerate(row):
            out[i].append(value)
    for i, (_, kind) in enumerate(columns):
        if kind in _JSON:
            out[i] = [None if v is None else json_text(v) for v in out[i]]
    return out


async def insert_rows(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    then: str = "",
    in_order: bool = False,
) -> list[asyncpg.Record]:
    """Insert `rows` (tuples in `columns` order) in one statement; `then` is appended
    (`ON CONFLICT ...`, `RETURNING ...`). Returns what `RETURNING` gives (else []).
    `in_order`: inserted in the order given (see `unnest_select`)."""
    if not rows:
        return []
    names = ", ".join(name for name, _ in columns)
    select = unnest_select(columns, in_order=in_order)
    sql = f"INSERT INTO {table} ({names}) {select} {then}".rstrip()
    return list(await conn.fetch(sql, *column_arrays(columns, rows)))
