"""Security on the embedded stack: each attempt refused, nothing changed.

Real broker, real PostgreSQL, services as processes. What the embedded broker (Tansu)
cannot enforce, because it has no ACLs, is tested as far as it can be: every agency's
replies go to a topic of its own and only there, and the broker rules that deployments
install (`perlinsos_shared.access`) let an agency read that topic and no other.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_devruntime.embedded import EmbeddedKafka, free_port
from perlinsos_devruntime.stack import Stack
from perlinsos_shared import access
from perlinsos_shared.db import create_pool
from perlinsos_shared.db_roles import READER
from perlinsos_shared.envelope import CONTENT_TYPE
from perlinsos_shared.intake_client import submission_event
from perlinsos_shared.settings import Settings
from perlinsos_shared.signing import HEADER, agency_keys_dir, signing_key
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, agency_replies_topic

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def secure_stack(
    postgres_server_url: str, shared_kafka: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One stack for the whole module (four services as processes; a stack takes long to
    start on a loaded machine): its own database, broker and state directory."""
    root = tmp_path_factory.mktemp("security")
    name = "t_" + uuid.uuid4().hex[:12]
    asyncio.run(_admin(postgres_server_url, f'CREATE DATABASE "{name}"'))
    kafka = None
    if shared_kafka is None:
        kafka = EmbeddedKafka(root / "kafka", port=free_port())
        kafka.start()
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=shared_kafka or (kafka.bootstrap_servers if kafka else ""),
        DATABASE_URL=_with_database(postgres_server_url, name),
        PERLINSOS_STATE_DIR=root / "state",
        PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS=3000,
        # the embedded broker does not implement Kafka's idempotent producer
        **({"PERLINSOS_KAFKA_IDEMPOTENT": False} if kafka is not None else {}),
    )
    stack = Stack(settings, http_port_base=0)
    try:
        stack.start_infrastructure()
        stack.start_services(timeout=240)  # generous: the machine may be shared and busy
        yield stack
    finally:
        stack.stop()
        if kafka is not None:
            kafka.stop()
        asyncio.run(_admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _with_database(url: str, database: str) -> str:
    base, _, rest = url.rpartition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{base}/{database}{query}"


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _clean(agency: str, n: int = 3) -> list[Submission]:
    """Valid submissions an agency may make (the cohort's own, without faults)."""
    subs = [s for s in generate_cohort(size=60, seed=16, fault_rate=0.0) if s.agency == agency]
    assert len(subs) >= n
    return subs[:n]


async def _send(bootstrap: str, records: list[tuple[str, bytes, str | None]]) -> None:
    """(key, value, signature header or None) to registry.intake.v1."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, sig in records:
            headers = [("content-type", CONTENT_TYPE.encode())]
            headers += [(HEADER, sig.encode())] if sig else []
            await producer.send_and_wait(INTAKE.name, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every event on `topic` now, with its `in-reply-to` header."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []

        async def behind() -> bool:
            return any([await consumer.position(p) < end[p] for p in parts])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or ()}
                    out.append(
                        {**orjson.loads(r.value or b"{}"), "_reply_to": headers.get("in-reply-to")}
                    )
        return out
    finally:
        await consumer.stop()


async def _replies_to(
    bootstrap: str, topic: str, ids: set[str], timeout: float = 60
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = {e["_reply_to"]: e for e in await _read(bootstrap, topic) if e["_reply_to"] in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def _registry_rows(url: str, subs: list[Submission]) -> tuple[set[str], int]:
    """Which of these people are participants, and how many of their requests are claimed."""
    conn = await asyncpg.connect(url)
    try:
        niks = await conn.fetch(
            "SELECT nik FROM registry.participants WHERE nik = ANY($1::text[])",
            [s.data["nik"] for s in subs],
        )
        claimed = await conn.fetchval(
            "SELECT count(*) FROM registry.submissions WHERE request_id = ANY($1::text[])",
            [s.request_id for s in subs],
        )
        return {r["nik"] for r in niks}, int(claimed)
    finally:
        await conn.close()


def _event_id(value: bytes) -> str:
    return str(orjson.loads(value)["id"])


async def test_forged_and_tampered_submissions_are_refused_and_change_nothing(
    secure_stack: Stack,
) -> None:
    bootstrap = secure_stack.bootstrap_servers
    keys = agency_keys_dir(secure_stack.state_dir)
    dishub, kelurahan = signing_key(keys, "DISHUB"), signing_key(keys, "KELURAHAN")
    genuine, forged_sub, tampered_sub = _clean("DISHUB")

    # A kelurahan office speaks for Dishub: source agency/DISHUB, signed with its own key.
    forged = submission_event("DISHUB", forged_sub.data)
    # Dishub's real signature, replayed on a body whose name was changed afterwards.
    original = submission_event("DISHUB", tampered_sub.data)
    tampered = original.replace(
        orjson.dumps(tampered_sub.data["full_name"]), orjson.dumps("Orang Lain")
    )
    assert tampered != original
    # No signature at all.
    unsigned = submission_event("DISHUB", {**genuine.data, "request_id": "tanpa-ttd-1"})
    refused = {
        _event_id(forged): (forged, kelurahan.sign(forged)),
        _event_id(tampered): (tampered, dishub.sign(original)),
        _event_id(unsigned): (unsigned, None),
    }
    await _send(
        bootstrap,
        [
            (s.data["nik"], v, sig)
            for s, (v, sig) in zip(
                (forged_sub, tampered_sub, genuine), refused.values(), strict=True
            )
        ],
    )

    own = agency_replies_topic("DISHUB")
    replies = await _replies_to(bootstrap, own, set(refused))
    assert set(replies) == set(refused)
    for reply in replies.values():
        assert [r["code"] for r in reply["data"]["reasons"]] == ["SOURCE_UNVERIFIED"]
        assert reply["data"]["agency"] == "DISHUB"
    people = [genuine, forged_sub, tampered_sub]
    niks, claimed = await _registry_rows(secure_stack.database_url, people)
    assert (niks, claimed) == (set(), 0), "a refused submission changes nothing"

    # The forger claimed nothing: Dishub's own submissions, same request ids, go through.
    real = [submission_event("DISHUB", s.data) for s in (genuine, forged_sub, tampered_sub)]
    await _send(
        bootstrap,
        [
            (s.data["nik"], v, dishub.sign(v))
            for s, v in zip((genuine, forged_sub, tampered_sub), real, strict=True)
        ],
    )
    deadline = time.monotonic() + 60
    while True:
        niks, claimed = await _registry_rows(secure_stack.database_url, people)
        if len(niks) == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert niks == {s.data["nik"] for s in people}
    assert claimed == 3


async def test_each_agency_gets_its_replies_on_its_own_topic_only(secure_stack: Stack) -> None:
    bootstrap = secure_stack.bootstrap_servers
    keys = agency_keys_dir(secure_stack.state_dir)
    sent: dict[str, str] = {}  # event id -> agency
    records = []
    for agency in ("DISHUB", "KELURAHAN"):
        sub = _clean(agency, 1)[0]
        data = {**sub.data, "request_id": f"{agency}-{uuid.uuid4().hex[:8]}", "nik": "123"}
        value = submission_event(agency, data)  # signed, but the NIK is invalid: refused
        sent[_event_id(value)] = agency
        records.append(("123", value, signing_key(keys, agency).sign(value)))
    await _send(bootstrap, records)

    for agency in ("DISHUB", "KELURAHAN"):
        mine = {i for i, a in sent.items() if a == agency}
        theirs = set(sent) - mine
        topic = agency_replies_topic(agency)
        replies = await _replies_to(bootstrap, topic, mine)
        assert set(replies) == mine
        assert all(r["data"]["agency"] == agency for r in replies.values())
        on_topic = {e["_reply_to"] for e in await _read(bootstrap, topic)}
        assert not on_topic & theirs, f"{agency} sees another agency's replies"

    # What the broker enforces in compose and Kubernetes (Tansu has no ACLs to test):
    rules = access.principals(["DISHUB", "KELURAHAN"])
    dishub = rules[access.agency_user("DISHUB")]
    assert access.allowed(dishub, "topic", agency_replies_topic("DISHUB"), "Read")
    assert not access.allowed(dishub, "topic", agency_replies_topic("KELURAHAN"), "Read")
    assert not access.allowed(dishub, "topic", INTAKE_REJECTED.name, "Read")
    assert not access.allowed(dishub, "topic", "registry.participants.v1", "Read")
    assert access.allowed(dishub, "topic", INTAKE.name, "Write")


async def test_each_service_is_walled_into_its_own_schema(secure_stack: Stack) -> None:
    stack = secure_stack
    admin = await asyncpg.connect(stack.database_url)
    try:
        logins = {
            r["usename"]
            for r in await admin.fetch(
                "SELECT DISTINCT usename FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        }
        tables = {
            (r["table_schema"], r["table_name"])
            for r in await admin.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema IN ('registry', 'eligibility', 'premium', 'notify')"
            )
        }
    finally:
        await admin.close()
    # Every running service holds its own login; none holds the privileged one.
    assert logins == {f"perlinsos_{s}" for s in access.SERVICES}
    assert ("eligibility", "decisions") in tables

    conn = await asyncpg.connect(stack.logins.services["registry"])
    try:
        await conn.execute("RESET ROLE")
        assert await conn.fetchval("SELECT current_user") == "perlinsos_registry"
        for schema in ("eligibility", "premium", "notify"):
            table = next(t for s, t in sorted(tables) if s == schema)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f'SELECT * FROM "{schema}"."{table}" LIMIT 1')
        for role in ("perlinsos_eligibility", "postgres"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'SET ROLE "{role}"')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE ROLE intruder LOGIN")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE SCHEMA intruder")
        # its own schema works as usual
        assert await conn.fetchval("SELECT count(*) FROM registry.participants") is not None
    finally:
        await conn.close()


async def test_operator_reads_cannot_write(secure_stack: Stack) -> None:
    """The read-only login every read command uses (`perlinsos registry audit`, `premium
    status`, ...) is refused any change, through the very pool those commands open."""
    pool = await create_pool(secure_stack.logins.reader, "registry", max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == READER
            before = await conn.fetchval("SELECT count(*) FROM outbox")
            for sql in (
                "INSERT INTO outbox (topic, key, value, headers) VALUES ('x', 'k', 'v'::bytea, '{}')",
                "UPDATE participants SET full_name = 'x'",
                "DELETE FROM submissions",
            ):
                with pytest.raises(
                    (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)
                ):
                    await conn.execute(sql)
            # even with the read-only default switched off, the grants refuse it
            await conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM submissions")
            assert await conn.fetchval("SELECT count(*) FROM outbox") == before
    finally:
        await pool.close()


def test_a_service_refuses_a_privileged_login(secure_stack: Stack) -> None:
    env = {**secure_stack.service_env(), "PERLINSOS_METRICS_PORT": "0"}
    env["DATABASE_URL"] = secure_stack.database_url  # the set-up login
    proc = subprocess.run(
        [sys.executable, "-m", "perlinsos_registry"],
        env={k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert b"privileged role" in proc.stdout + proc.stderr
