"""The shared batch consumer on a real PostgreSQL: transient database errors are waited
out (never dead-lettered), poison is isolated alone, the inbox keys on (source, id), and
unstorable messages are dead-lettered without blocking their partition.

Records are built in the test (the consumer's input is a list of Kafka records); the
database, its errors and the inbox are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest

from perlinsos_shared.consumer import BatchConsumer, Incoming, is_transient
from perlinsos_shared.db import SHARED_MIGRATIONS, create_pool, migrate
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import PARTICIPANTS

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process

SERVICE = "consumertest"


@dataclass
class FakeRecord:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = PARTICIPANTS.name
    partition: int = 0
    offset: int = 0
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)


def event(event_id: str, source: str = "registry", **data: object) -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": event_id, "source": source, "type": "t.v1", "data": data}
    ).encode()


def records(values: list[bytes]) -> list[FakeRecord]:
    return [FakeRecord(value=v, offset=i) for i, v in enumerate(values)]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, SERVICE, max_size=3)
    await migrate(p, SERVICE, [SHARED_MIGRATIONS])
    await p.execute(
        "CREATE TABLE applied (n bigserial PRIMARY KEY, source text, event_id text, v text)"
    )
    yield p
    await p.close()


async def applied(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT source, event_id FROM applied ORDER BY n")
    return [(r["source"], r["event_id"]) for r in rows]


async def dead_letters(pool: asyncpg.Pool) -> list[dict[str, str]]:
    rows = await pool.fetch(
        "SELECT headers FROM outbox WHERE topic = $1 ORDER BY id", PARTICIPANTS.dlq
    )
    return [dict(r["headers"]) for r in rows]


async def record_all(conn: asyncpg.Connection, batch: list[Incoming], outbox: Outbox) -> None:
    await conn.executemany(
        "INSERT INTO applied (source, event_id, v) VALUES ($1, $2, $3)",
        [(m.envelope.source, m.id, json.dumps(m.envelope.data)) for m in batch],
    )


def consumer(pool: asyncpg.Pool, handler: object = record_all) -> BatchConsumer:
    return BatchConsumer(
        service=SERVICE,
        topic=PARTICIPANTS,
        pool_getter=lambda: pool,
        handler=handler,  # type: ignore[arg-type]
        max_attempts=3,
        retry_backoff_max_s=0.5,
    )


async def test_a_database_terminating_the_batch_is_waited_out_not_dead_lettered(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The administrator terminates the batch's connection twice (a restart looks the same
    to the client): the batch is tried again on a new connection, applied once, and
    nothing goes to the dead-letter topic."""
    terminations = 0

    async def handler(conn: asyncpg.Connection, batch: list[Incoming], outbox: Outbox) -> None:
        nonlocal terminations
        if terminations < 2:
            terminations += 1
            killer = await asyncpg.connect(database_url)
            try:
                await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            finally:
                await killer.close()
            await conn.execute("SELECT 1")  # the connection is gone: this fails
        await record_all(conn, batch, outbox)

    c = consumer(pool, handler)
    await c.process(records([event(f"e{i}") for i in range(20)]))
    assert terminations == 2
    assert await applied(pool) == [("registry", f"e{i}") for i in range(20)]
    assert await dead_letters(pool) == []


async def test_a_lock_timeout_is_waited_out_not_dead_lettered(pool: asyncpg.Pool) -> None:
    """A real lock timeout (55P03) while another session holds a row the handler needs."""
    await pool.execute("CREATE TABLE quota (line text PRIMARY KEY, used int)")
    await pool.execute("INSERT INTO quota VALUES ('PERWAKO-49-2025', 0)")
    errors: list[str] = []

    async def handler(conn: asyncpg.Connection, batch: list[Incoming], outbox: Outbox) -> None:
        await conn.execute("SET LOCAL lock_timeout = '100ms'")
        try:
            await conn.execute("UPDATE quota SET used = used + $1", len(batch))
        except asyncpg.PostgresError as exc:
            errors.append(exc.sqlstate)
            raise
        await record_all(conn, batch, outbox)

    holder = await pool.acquire()
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT * FROM quota FOR UPDATE")
    c = consumer(pool, handler)
    task = asyncio.create_task(c.process(records([event("a"), event("b")])))
    await asyncio.sleep(1.5)
    assert not task.done()  # waiting, not dead-lettering
    await tx.rollback()
    await pool.release(holder)
    await asyncio.wait_for(task, timeout=30)
    assert errors and set(errors) == {"55P03"}
    assert await applied(pool) == [("registry", "a"), ("registry", "b")]
    assert await pool.fetchval("SELECT used FROM quota") == 2
    assert await dead_letters(pool) == []


async def test_two_sources_with_the_same_event_id_are_both_processed(pool: asyncpg.Pool) -> None:
    c = consumer(pool)
    batch = [
        event("REQ-1", source="agency/DISHUB"),
        event("REQ-1", source="agency/DISNAKER"),
        event("REQ-1", source="agency/DISHUB"),  # a real repeat inside the batch
    ]
    await c.process(records(batch))
    await c.process(records([event("REQ-1", source="agency/DISNAKER")]))  # redelivered
    assert await applied(pool) == [("agency/DISHUB", "REQ-1"), ("agency/DISNAKER", "REQ-1")]
    assert c.stats.duplicates == 2


async def test_a_legacy_inbox_row_without_source_still_counts_as_seen(
    pool: asyncpg.Pool,
) -> None:
    """Rows from before the (source, id) migration have source '' and still match by id."""
    await pool.execute("INSERT INTO inbox (source, event_id) VALUES ('', 'old-1')")
    c = consumer(pool)
    await c.process(records([event("old-1"), event("new-1")]))
    assert await applied(pool) == [("registry", "new-1")]


async def test_poison_is_isolated_alone_and_the_rest_applied_in_order(pool: asyncpg.Pool) -> None:
    async def handler(conn: asyncpg.Connection, batch: list[Incoming], outbox: Outbox) -> None:
        if any(m.envelope.data.get("poison") for m in batch):
            raise ValueError("cannot apply this event")
        await record_all(conn, batch, outbox)

    ids = [f"e{i:02d}" for i in range(40)]
    values = [event(i, poison=(i == "e17")) for i in ids]
    c = consumer(pool, handler)
    await c.process(records(values))
    assert await applied(pool) == [("registry", i) for i in ids if i != "e17"]
    letters = await dead_letters(pool)
    assert [h["x-dlq-original-offset"] for h in letters] == ["17"]
    assert "ValueError" in letters[0]["x-dlq-error"]
    # redelivered: the dead letter's inbox row keeps it from being dead-lettered twice
    await c.process(records(values))
    assert len(await dead_letters(pool)) == 1


async def test_unstorable_messages_are_dead_lettered_without_blocking(pool: asyncpg.Pool) -> None:
    c = consumer(pool)
    long_id = "x" * 4096
    nul_id = "bad\u0000id"
    recs = records(
        [
            event("ok-1"),
            event(long_id),  # refused by the envelope (at most 256 characters)
            event(nul_id),  # valid JSON, but PostgreSQL text cannot hold NUL
            b"not json",  # with a NUL in its key and a header: still dead-lettered
            event("ok-2"),
        ]
    )
    recs[3].key = b"nul\x00key"
    recs[3].headers = [("h", b"a\x00b")]
    await asyncio.wait_for(c.process(recs), timeout=60)
    assert await applied(pool) == [("registry", "ok-1"), ("registry", "ok-2")]
    letters = await dead_letters(pool)
    assert sorted(h["x-dlq-original-offset"] for h in letters) == ["1", "2", "3"]


async def test_a_dead_letter_that_fails_for_another_reason_is_written_later_not_skipped(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipping a message whose dead letter cannot be written loses it; only a letter
    PostgreSQL refuses for its content may be skipped. Any other failure (here one nobody
    classified, twice) is waited out and the letter written."""
    from perlinsos_shared import consumer as consumer_module

    real = consumer_module.dead_letter
    failures = 2

    def flaky(*args: object, **kwargs: object) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise asyncpg.InterfaceError("something nobody classified")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(consumer_module, "dead_letter", flaky)

    async def handler(conn: asyncpg.Connection, batch: list[Incoming], outbox: Outbox) -> None:
        if any(m.envelope.data.get("poison") for m in batch):
            raise ValueError("cannot apply this event")
        await record_all(conn, batch, outbox)

    c = consumer(pool, handler)
    await asyncio.wait_for(c.process(records([event("p1", poison=True)])), timeout=60)
    assert failures == 0
    letters = await dead_letters(pool)
    assert [h["x-dlq-original-offset"] for h in letters] == ["0"]


def test_only_a_refused_content_lets_a_dead_letter_be_skipped() -> None:
    from perlinsos_shared.consumer import record_unstorable

    assert record_unstorable(asyncpg.exceptions.UntranslatableCharacterError())
    assert record_unstorable(asyncpg.exceptions.CharacterNotInRepertoireError())
    assert record_unstorable(ValueError("cannot encode"))
    assert not record_unstorable(asyncpg.InterfaceError("pool is closing"))
    assert not record_unstorable(asyncpg.InterfaceError("something nobody classified"))
    assert not record_unstorable(RuntimeError("a bug"))
    assert not record_unstorable(asyncpg.exceptions.AdminShutdownError())


def test_transient_and_poison_are_told_apart() -> None:
    transient = [
        asyncpg.exceptions.AdminShutdownError(),
        asyncpg.exceptions.CannotConnectNowError(),
        asyncpg.exceptions.TooManyConnectionsError(),
        asyncpg.exceptions.QueryCanceledError(),  # statement timeout
        asyncpg.exceptions.LockNotAvailableError(),  # lock timeout
        asyncpg.exceptions.SerializationError(),
        asyncpg.exceptions.DeadlockDetectedError(),
        asyncpg.exceptions.ReadOnlySQLTransactionError(),
        asyncpg.exceptions.ConnectionDoesNotExistError(),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
        asyncpg.InterfaceError("pool is closed"),
        ConnectionRefusedError(),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),
    ]
    poison = [
        ValueError("bad"),
        KeyError("x"),
        asyncpg.exceptions.UniqueViolationError(),
        asyncpg.exceptions.CheckViolationError(),
        asyncpg.exceptions.ProgramLimitExceededError(),  # index row too large
        asyncpg.exceptions.CharacterNotInRepertoireError(),
        FileNotFoundError("rules.yaml"),
    ]
    assert [type(e).__name__ for e in transient if not is_transient(e)] == []
    assert [type(e).__name__ for e in poison if is_transient(e)] == []
    wrapped = RuntimeError("handler failed")
    wrapped.__cause__ = asyncpg.exceptions.AdminShutdownError()
    assert is_transient(wrapped)
