"""`perlinsos outbox`: see each service's outbox, and refill a broker that lost its topics.

PostgreSQL is the system of record. Every event a service emitted stays in its outbox
after publication, so when the broker loses its data (the embedded broker keeps topics
in memory) `perlinsos outbox replay` marks the rows unpublished again and each service's
relay publishes them anew, in their original order and before anything newer. Consumers
have recorded every event they applied (inbox), so the replayed events change nothing and
send no second SMS.

While the broker is being rebuilt, `perlinsos outbox hold` stops the relays first, so that
no event written meanwhile reaches the new broker ahead of the older ones it follows (an
exit before its enrolment); `replay` lifts the hold.

A row the broker refuses for itself (a record larger than it accepts) is marked refused
and skipped by the relay, so the rows behind it carry on: `status` counts them, `refused`
lists them (never their content), and `retry` queues them again once the broker's limit
is raised.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from perlinsos_shared.db_roles import SERVICES
from perlinsos_shared.operator import (
    database_url,
    hold_outboxes,
    open_operator_pool,
    replay_outboxes,
    writer_url,
)
from perlinsos_shared.outbox import held as outbox_held
from perlinsos_shared.outbox import refused_rows, retry_refused

Service = StrEnum("Service", {name: name for name in SERVICES})  # type: ignore[misc]

app = typer.Typer(help="Each service's transactional outbox.", no_args_is_help=True)
console = Console()


async def _status(url: str) -> list[tuple[str, int, int, int, str, bool]]:
    out = []
    for service in SERVICES:
        pool = await open_operator_pool(service, url, size=1)
        try:
            row = await pool.fetchrow(
                "SELECT count(*) AS total, (SELECT count(*) FROM outbox_pending) AS pending,"
                " count(*) FILTER (WHERE refused_at IS NOT NULL) AS refused,"
                " coalesce(max(created_at)::text, '-') AS newest FROM outbox"
            )
            is_held = await outbox_held(pool)
        finally:
            await pool.close()
        assert row is not None
        out.append(
            (
                service,
                int(row["total"]),
                int(row["pending"]),
                int(row["refused"]),
                str(row["newest"]),
                is_held,
            )
        )
    return out


@app.command()
def status() -> None:
    """Events each service emitted, and how many still wait for the broker."""
    table = Table(title="outboxes")
    for col in ("service", "events", "not yet published", "refused", "newest", "relay"):
        table.add_column(col)
    for service, total, pending, refused, newest, is_held in asyncio.run(_status(database_url())):
        relay = "held (until replay)" if is_held else "publishing"
        table.add_row(service, f"{total:,}", f"{pending:,}", f"{refused:,}", newest, relay)
    console.print(table)


async def _refused(url: str, services: tuple[str, ...]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for service in services:
        pool = await open_operator_pool(service, url, size=1)
        try:
            out.extend((service, row) for row in await refused_rows(pool))
        finally:
            await pool.close()
    return out


@app.command()
def refused(
    service: list[Service] = typer.Option(
        list(Service), "--service", "-s", help="Only these services (repeat the option)."
    ),
) -> None:
    """Events the broker refused (too large for it): skipped by the relay, kept here."""
    table = Table(title="refused by the broker")
    for col in ("service", "id", "topic", "bytes", "written", "refused", "why"):
        table.add_column(col)
    for name, row in asyncio.run(_refused(database_url(), _known(service))):
        table.add_row(
            name,
            str(row["id"]),
            row["topic"],
            f"{row['bytes']:,}",
            str(row["created_at"]),
            str(row["refused_at"]),
            row["refusal"],
        )
    console.print(table)


async def _retry(urls: dict[str, str], ids: list[int] | None) -> dict[str, int]:
    counts = {}
    for service, url in urls.items():
        pool = await open_operator_pool(service, url, size=1)
        try:
            counts[service] = await retry_refused(pool, ids)
        finally:
            await pool.close()
    return counts


@app.command()
def retry(
    service: Service = typer.Argument(..., help="The service whose outbox holds the rows."),
    ids: list[int] = typer.Argument(None, help="Outbox ids (from `refused`); all if none."),
) -> None:
    """Queue refused events for publication again (after the broker's limit is raised);
    each goes out after the later events of its key that were published meanwhile."""
    name = str(service)
    counts = asyncio.run(_retry({name: writer_url(name)}, ids or None))
    console.print(f"{name}: {counts[name]:,} refused events queued for publication again")


@app.command()
def replay(
    service: list[Service] = typer.Option(
        list(Service), "--service", "-s", help="Only these services (repeat the option)."
    ),
) -> None:
    """Publish every event again from the outboxes (after the broker lost its topics)."""
    chosen = _known(service)
    counts = asyncio.run(replay_outboxes(database_url(), chosen, _writers(chosen)))
    for name, n in counts.items():
        console.print(f"{name}: {n:,} events queued for publication again")


@app.command()
def hold(
    service: list[Service] = typer.Option(
        list(Service), "--service", "-s", help="Only these services (repeat the option)."
    ),
) -> None:
    """Stop the relays publishing until `replay` (while a broker is rebuilt)."""
    chosen = _known(service)
    asyncio.run(hold_outboxes(database_url(), chosen, _writers(chosen)))
    for name in _known(service):
        console.print(f"{name}: relay held until `perlinsos outbox replay`")


def _writers(services: tuple[str, ...]) -> dict[str, str]:
    """Each service's own login: replay and hold change its outbox (status only reads)."""
    return {s: writer_url(s) for s in services}


def _known(service: list[Service]) -> tuple[str, ...]:
    return tuple(str(s) for s in service)
