"""The hot statements and their plans once the tables are large.

`enable_statements(stack)` loads pg_stat_statements into the embedded PostgreSQL (one
restart, before the services start). `hot_plans(url)` then takes the statements the
services spent the most time in, and EXPLAINs each as its service would run it (its
schema, a generic plan: PostgreSQL 16 and later), flagging every sequential scan of a
table with more than `LARGE` rows, and every index scan of one with no index condition
(the whole index read in its order: a merge join's input, say, which costs as much as a
sequential scan and grows the same way). `scans(url)` adds each large table's sequential and
index scans as counted by PostgreSQL over the whole run.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg

from perlinsos_devruntime.stack import Stack

LARGE = 10_000
TOP = 15
_INDEX_SCANS = ("Index Scan", "Index Only Scan")
_EXPLAINABLE = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.I)


def enable_statements(stack: Stack) -> None:
    """pg_stat_statements on (needs a restart of the embedded server; call it before the
    services start)."""
    assert stack.postgres is not None

    async def configure() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    asyncio.run(configure())
    stack.postgres.stop()
    stack.postgres.start()

    async def create() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()

    asyncio.run(create())


async def reset_statements(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def hot_plans(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT r.rolname AS role, s.query, s.calls, s.total_exec_time, s.rows"
            " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " WHERE r.rolname LIKE 'perlinsos\\_%' AND r.rolname <> 'perlinsos_reader'"
            " ORDER BY s.total_exec_time DESC LIMIT $1",
            TOP * 3,
        )
        sizes = {
            f"{r['schema']}.{r['name']}": int(r["n"])
            for r in await conn.fetch(
                "SELECT n.nspname AS schema, c.relname AS name, c.reltuples AS n"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p')"
            )
        }
        out: list[dict[str, Any]] = []
        for r in rows:
            if len(out) >= TOP or not _EXPLAINABLE.match(r["query"]):
                continue
            schema = r["role"].removeprefix("perlinsos_")
            await conn.execute(f'SET search_path TO "{schema}"')
            whole: list[str] = []  # sequential scans and whole-index reads of large tables
            try:
                stmt = await conn.prepare("EXPLAIN (GENERIC_PLAN) " + r["query"])
                nulls = [None] * len(stmt.get_parameters())  # not used by a generic plan
                plan = "\n".join(x[0] for x in await stmt.fetch(*nulls))
                shaped = await conn.prepare("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + r["query"])
                tree = await shaped.fetchval(*nulls)
                tree = json.loads(tree) if isinstance(tree, str) else tree
                for kind, table in whole_scans(tree[0]["Plan"]):
                    qualified = table if "." in table else f"{schema}.{table}"
                    if sizes.get(qualified, 0) > LARGE:
                        whole.append(
                            qualified if kind == "Seq Scan" else f"{qualified} (whole index)"
                        )
            except asyncpg.PostgresError as exc:
                plan = f"(not explained: {type(exc).__name__})"
            out.append(
                {
                    "service": schema,
                    "query": " ".join(r["query"].split())[:300],
                    "calls": int(r["calls"]),
                    "total_ms": round(float(r["total_exec_time"])),
                    "ms_per_call": round(float(r["total_exec_time"]) / max(1, r["calls"]), 3),
                    # the key keeps its name: earlier benchmarks.json files carry it
                    "seq_scans_of_large_tables": whole,
                    "plan": plan,
                }
            )
        return out
    finally:
        await conn.close()


def whole_scans(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, table) of every scan in a JSON plan that reads a whole table: a
    sequential scan, or an index scan with no index condition."""
    out: list[tuple[str, str]] = []
    kind = node.get("Node Type", "")
    table = node.get("Relation Name")
    if table and (kind == "Seq Scan" or (kind in _INDEX_SCANS and "Index Cond" not in node)):
        schema = node.get("Schema")
        out.append((kind, f"{schema}.{table}" if schema else table))
    for child in node.get("Plans", []):
        out += whole_scans(child)
    return out


async def scans(url: str, larger_than: int = LARGE) -> list[dict[str, Any]]:
    """Tables with more than `larger_than` rows: sequential and index scans over the run,
    and the bytes they take with their indexes."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
        rows = await conn.fetch(
            "SELECT schemaname, relname, n_live_tup, seq_scan, seq_tup_read, idx_scan,"
            " pg_total_relation_size(relid) AS bytes"
            " FROM pg_stat_user_tables WHERE n_live_tup > $1"
            " ORDER BY seq_tup_read DESC, n_live_tup DESC",
            larger_than,
        )
        return [
            {
                "table": f"{r['schemaname']}.{r['relname']}",
                "rows": int(r["n_live_tup"]),
                "seq_scans": int(r["seq_scan"] or 0),
                "rows_read_by_seq_scans": int(r["seq_tup_read"] or 0),
                "index_scans": int(r["idx_scan"] or 0),
                "bytes": int(r["bytes"]),
            }
            for r in rows
        ]
    finally:
        await conn.close()
