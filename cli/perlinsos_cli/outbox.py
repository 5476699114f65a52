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
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

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

Service = StrEnum("Service", {name: name for name in SERVICES})  # type: ignore[misc]

app = typer.Typer(help="Each service's transactional outbox.", no_args_is_help=True)
console = Console()


async def _status(url: str) -> list[tuple[str, int, int, str, bool]]:
    out = []
    for service in SERVICES:
        pool = await open_operator_pool(service, url, size=1)
        try:
            row = await pool.fetchrow(
                "SELECT count(*) AS total, count(*) FILTER (WHERE published_at IS NULL)"
                " AS pending, coalesce(max(created_at)::text, '-') AS newest FROM outbox"
            )
            is_held = await outbox_held(pool)
        finally:
            await pool.close()
        assert row is not None
        out.append((service, int(row["total"]), int(row["pending"]), str(row["newest"]), is_held))
    return out


@app.command()
def status() -> None:
    """Events each service emitted, and how many still wait for the broker."""
    table = Table(title="outboxes")
    for col in ("service", "events", "not yet published", "newest", "relay"):
        table.add_column(col)
    for service, total, pending, newest, is_held in asyncio.run(_status(database_url())):
        relay = "held (until replay)" if is_held else "publishing"
        table.add_row(service, f"{total:,}", f"{pending:,}", newest, relay)
    console.print(table)


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
