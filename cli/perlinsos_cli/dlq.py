"""`perlinsos dlq`: dead letters an operator can list, read and send again.

A message a service gives up on (it fails alone, deterministically; or it is not an event
at all) goes to its topic's `.dlq` twin with `x-dlq-*` headers: the error, the original
topic, partition and offset, when, and which service gave up on it (`x-dlq-consumer`).

A dead letter's ID is where it sits on the dead-letter topic: `DLQ_TOPIC:PARTITION:OFFSET`
(for example `eligibility.decisions.v1.dlq:0:12`). Kafka gives every record one, it never
changes, and it names the record without reading it.

`redrive` sends a dead letter back to its original topic, with its original key, value and
headers, to be processed as if new by the service that gave up on it. That service
recorded the event in its inbox when it dead-lettered it (so a redelivery would not make a
second dead letter), marked `dead_lettered`; redrive deletes that mark first. Services that
applied the event already (another consumer of the topic) drop the copy through their
inbox. An event the service has since applied (a redrive that worked) has an ordinary
inbox row: it is skipped, so redriving twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import typer
from aiokafka import TopicPartition
from rich.console import Console
from rich.table import Table

from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.consumer import decode
from perlinsos_shared.db_roles import SERVICES
from perlinsos_shared.masking import mask_personal
from perlinsos_shared.operator import (
    bootstrap_servers,
    database_url,
    fail,
    open_operator_pool,
    operator_consumer,
    operator_producer,
    operator_settings,
)
from perlinsos_shared.scrubbing import scrub
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import CATALOGUE, DLQ_SUFFIX, Topic

app = typer.Typer(help="Dead letters: list, show, redrive.", no_args_is_help=True)
console = Console()

REDRIVEN_FROM = "x-dlq-redriven-from"


@dataclass
class DeadLetter:
    topic: str  # the .dlq topic
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    state: str = "-"  # filled from the consumers' inboxes

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def original_topic(self) -> str:
        return self.headers.get("x-dlq-original-topic") or self.topic.removesuffix(DLQ_SUFFIX)

    @property
    def original(self) -> str:
        h = self.headers
        return (
            f"{self.original_topic}:{h.get('x-dlq-original-partition', '?')}"
            f":{h.get('x-dlq-original-offset', '?')}"
        )

    @property
    def failed_at(self) -> datetime:
        raw = self.headers.get("x-dlq-failed-at")
        seconds = float(raw) if raw and raw.isdigit() else self.timestamp_ms / 1000
        return datetime.fromtimestamp(seconds, UTC)

    @property
    def error(self) -> str:
        return self.headers.get("x-dlq-error", "")

    @property
    def consumers(self) -> tuple[str, ...]:
        """The services that may hold it in their inbox: the one that gave up on it when
        known, else every service consuming the original topic."""
        named = self.headers.get("x-dlq-consumer")
        if named:
            return (named,)
        topic = _topic(self.original_topic)
        return tuple(c for c in (topic.consumers if topic else ()) if c in SERVICES)

    def event_key(self) -> tuple[str, str] | None:
        """(`source`, `id`) when the value is an event, else None."""
        record = SimpleNamespace(
            topic=self.original_topic,
            partition=0,
            offset=0,
            key=self.key,
            value=self.value,
            headers=[(k, v.encode()) for k, v in self.headers.items()],
        )
        try:
            env = decode(record)
        except ValueError:  # pydantic's ValidationError included
            return None
        return (env.source, env.id)

    def original_headers(self) -> list[tuple[str, bytes]]:
        kept = [(k, v.encode()) for k, v in self.headers.items() if not k.startswith("x-dlq-")]
        return [*kept, (REDRIVEN_FROM, self.id.encode())]


def _topic(name: str) -> Topic | None:
    return next((t for t in CATALOGUE if t.name == name), None)


def _dlq_topics(topic: str | None) -> list[str]:
    if topic is None:
        return [t.dlq for t in CATALOGUE]
    name = topic.removesuffix(DLQ_SUFFIX)
    if _topic(name) is None:
        known = ", ".join(t.name for t in CATALOGUE)
        raise typer.BadParameter(f"unknown topic {topic!r}; one of: {known}")
    return [name + DLQ_SUFFIX]


def _parse_id(value: str) -> tuple[str, int, int]:
    try:
        topic, partition, offset = value.rsplit(":", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a dead letter id (DLQ_TOPIC:PARTITION:OFFSET)"
        ) from None


async def read_dead_letters(settings: Settings, topics: Iterable[str]) -> list[DeadLetter]:
    """Every record on these dead-letter topics, read from the start to the current end
    (no consumer group: reading changes nothing)."""
    out: list[DeadLetter] = []
    async with operator_consumer(settings) as consumer:
        existing = await consumer.topics()
        parts = [
            TopicPartition(t, p)
            for t in topics
            if t in existing
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        left = {tp for tp in parts if ends[tp] > 0}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    out.append(
                        DeadLetter(
                            r.topic,
                            r.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value or b"",
                            {k: v.decode(errors="replace") for k, v in r.headers or ()},
                        )
                    )
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    return sorted(out, key=lambda d: (d.topic, d.partition, d.offset))


async def _inbox_states(
    settings: Settings, letters: list[DeadLetter]
) -> dict[str, dict[str, str | None]]:
    """Per dead letter id, per consumer service: 'dead' (its inbox row was written with the
    dead letter), 'applied' (an ordinary row), or None (no row: not applied yet)."""
    assert settings.database_url
    keys = {d.id: d.event_key() for d in letters}
    states: dict[str, dict[str, str | None]] = {d.id: {} for d in letters}
    for service in sorted({s for d in letters for s in d.consumers}):
        pool = await open_operator_pool(service, settings=settings, size=1)
        try:
            for d in letters:
                key = keys[d.id]
                if service not in d.consumers or key is None:
                    continue
                dead = await pool.fetchval(
                    "SELECT dead_lettered FROM inbox WHERE (source = $1 OR source = '')"
                    " AND event_id = $2 ORDER BY source DESC LIMIT 1",
                    *key,
                )
                states[d.id][service] = None if dead is None else ("dead" if dead else "applied")
        finally:
            await pool.close()
    return states


def _describe(key: tuple[str, str] | None, state: dict[str, str | None]) -> str:
    if key is None:
        return "not an event"
    if not state:
        return "-"
    if all(v == "applied" for v in state.values()):
        return "applied"
    if any(v == "dead" for v in state.values()):
        return "dead"
    return "redriven, not applied yet"


async def _with_states(settings: Settings, letters: list[DeadLetter]) -> list[DeadLetter]:
    if not settings.database_url or not letters:
        return letters
    states = await _inbox_states(settings, letters)
    for d in letters:
        d.state = _describe(d.event_key(), states[d.id])
    return letters


def _settings() -> Settings:
    settings = operator_settings()
    bootstrap_servers(settings)  # one line and exit when there is no broker to reach
    return settings


def _when(value: datetime) -> str:
    return value.astimezone(BATAM_TZ).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_(
    topic: str | None = typer.Argument(
        None, help="A topic (or its .dlq twin); every topic when left out."
    ),
) -> None:
    """Dead letters, oldest first: where each came from, why, and whether it was redriven."""
    settings = _settings()

    async def fetch() -> list[DeadLetter]:
        return await _with_states(settings, await read_dead_letters(settings, _dlq_topics(topic)))

    letters = asyncio.run(fetch())
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("id", "from", "consumer", "failed at", "state", "error"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(
            d.id,
            d.original,
            ", ".join(d.consumers) or "-",
            _when(d.failed_at),
            d.state,
            scrub(d.error)[:120],
        )
    console.print(table)


@app.command()
def show(
    dead_letter_id: str = typer.Argument(
        ..., metavar="ID", help="The dead letter, as DLQ_TOPIC:PARTITION:OFFSET."
    ),
    show_personal_data: bool = typer.Option(
        False, "--show-personal-data", help="Show NIK, names, phones and addresses unmasked."
    ),
) -> None:
    """One dead letter: the error, where it came from, when, and its payload (personal
    data masked unless --show-personal-data)."""
    settings = _settings()
    topic, _, _ = _parse_id(dead_letter_id)
    _dlq_topics(topic)

    async def fetch() -> DeadLetter | None:
        letters = await read_dead_letters(settings, [topic])
        found = [d for d in letters if d.id == dead_letter_id]
        return (await _with_states(settings, found))[0] if found else None

    d = asyncio.run(fetch())
    if d is None:
        fail(f"no dead letter {dead_letter_id}", 1)
    try:
        payload: Any = json.loads(d.value)
    except ValueError:
        payload = d.value.decode(errors="replace")
    if not show_personal_data:
        payload = mask_personal(payload) if not isinstance(payload, str) else scrub(payload)
    shown = payload if isinstance(payload, str) else json.dumps(payload, indent=2, default=str)
    key = d.key.decode(errors="replace") if d.key is not None else "-"
    console.print(f"[bold]{d.id}[/bold]")
    console.print(f"from      {d.original} (key {key})")
    console.print(f"consumer  {', '.join(d.consumers) or '-'}")
    console.print(f"failed at {_when(d.failed_at)}")
    console.print(f"state     {d.state}")
    console.print(f"error     {d.error if show_personal_data else scrub(d.error)}")
    console.print("payload" + ("" if show_personal_data else " (personal data masked)"))
    console.print(shown, markup=False, highlight=False)


@dataclass
class Redrive:
    sent: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # skipped: processed already
    not_events: list[str] = field(default_factory=list)  # skipped: cannot be processed


async def redrive_dead_letters(settings: Settings, topic: str, only: str | None = None) -> Redrive:
    assert settings.database_url
    letters = await read_dead_letters(settings, _dlq_topics(topic))
    if only is not None:
        letters = [d for d in letters if d.id == only]
    states = await _inbox_states(settings, letters)
    done = Redrive()
    async with operator_producer("perlinsos-dlq", settings) as producer:
        for d in letters:
            key = d.event_key()
            state = states[d.id]
            if key is None:
                done.not_events.append(d.id)
                continue
            if state and all(v == "applied" for v in state.values()):
                done.applied.append(d.id)
                continue
            for service, v in state.items():
                if v != "dead":
                    continue
                pool = await open_operator_pool(service, settings=settings, size=1)
                try:
                    await pool.execute(
                        "DELETE FROM inbox WHERE (source = $1 OR source = '') AND event_id = $2"
                        " AND dead_lettered",
                        *key,
                    )
                finally:
                    await pool.close()
            await producer.send_and_wait(
                d.original_topic, d.value, key=d.key, headers=d.original_headers()
            )
            done.sent.append(d.id)
    return done


@app.command()
def redrive(
    topic: str = typer.Argument(
        ..., help="The topic (or its .dlq twin) whose dead letters to send again."
    ),
    dead_letter_id: str | None = typer.Option(
        None, "--id", help="Only this dead letter (DLQ_TOPIC:PARTITION:OFFSET)."
    ),
) -> None:
    """Send dead letters back to their topic, to be processed as if new by the service that
    gave up on them (after the cause is fixed). Redriving twice changes nothing."""
    settings = _settings()
    database_url(settings)  # one line and exit when there is no database to reach
    if dead_letter_id is not None:
        _parse_id(dead_letter_id)
    done = asyncio.run(redrive_dead_letters(settings, topic, dead_letter_id))
    if dead_letter_id is not None and not (done.sent or done.applied or done.not_events):
        fail(f"no dead letter {dead_letter_id} on {topic}", 1)
    console.print(f"redriven: {len(done.sent)}")
    for i in done.sent:
        console.print(f"  {i}")
    if done.applied:
        console.print(f"skipped, applied already: {len(done.applied)}")
    if done.not_events:
        console.print(
            f"skipped, not an event (fix at the source and send again): {len(done.not_events)}"
        )
        for i in done.not_events:
            console.print(f"  {i}")
