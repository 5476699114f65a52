"""A service consumes all its topics with one Kafka consumer: a fetch's records are split
by topic, each topic's go to its own `BatchConsumer` in fetch order, and the fetch is
done only once every topic's part is."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from perlinsos_shared.consumer import BatchConsumer
from perlinsos_shared.service import ServiceRuntime, dispatch
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import BPJS_MEMBERSHIPS, DECISIONS, INTAKE, PARTICIPANTS, PAYMENTS


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)


class Recording(BatchConsumer):
    """Records what it is given instead of applying it."""

    def __init__(self, topic: Any, log: list[str], *, fail: bool = False) -> None:
        super().__init__(service="t", topic=topic, pool_getter=lambda: None, handler=_never)  # type: ignore[arg-type,return-value]
        self.batches: list[list[tuple[int, int]]] = []
        self.positions: list[list[tuple[int, int]]] = []
        self._log = log
        self._fail = fail

    async def process(self, records: Sequence[Any]) -> None:
        self._log.append(f"start {self.topic.name}")
        await asyncio.sleep(0)  # the other topics' batches run meanwhile
        if self._fail:
            raise RuntimeError("a bug")
        self.batches.append([(r.partition, r.offset) for r in records])
        self._log.append(f"end {self.topic.name}")

    def note_positions(self, kafka_consumer: Any, records: Sequence[Any]) -> None:
        self.positions.append([(r.partition, r.offset) for r in records])


async def _never(*_: Any) -> None:
    raise AssertionError("not called")


def test_records_go_to_their_topics_consumer_in_fetch_order() -> None:
    log: list[str] = []
    decisions, participants, payments = (
        Recording(DECISIONS, log),
        Recording(PARTICIPANTS, log),
        Recording(PAYMENTS, log),
    )
    fetch = [
        FakeRecord(PARTICIPANTS.name, 1, 7),
        FakeRecord(DECISIONS.name, 0, 3),
        FakeRecord(PARTICIPANTS.name, 1, 8),
        FakeRecord(DECISIONS.name, 2, 5),
        FakeRecord(DECISIONS.name, 0, 4),
        FakeRecord(PARTICIPANTS.name, 0, 1),
    ]
    asyncio.run(dispatch([decisions, participants, payments], fetch, object()))
    assert decisions.batches == [[(0, 3), (2, 5), (0, 4)]]
    assert participants.batches == [[(1, 7), (1, 8), (0, 1)]]
    assert payments.batches == []  # nothing fetched for it: not called
    assert decisions.positions == decisions.batches
    assert participants.positions == participants.batches
    # side by side, as separate consumers were: both started before either ended
    assert log[:2] == [f"start {DECISIONS.name}", f"start {PARTICIPANTS.name}"]


def test_a_failing_topic_fails_the_fetch_after_the_others_are_done() -> None:
    log: list[str] = []
    good, bad = Recording(DECISIONS, log), Recording(PAYMENTS, log, fail=True)
    fetch = [FakeRecord(PAYMENTS.name, 0, 0), FakeRecord(DECISIONS.name, 0, 0)]
    with pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(dispatch([good, bad], fetch, object()))
    assert good.batches == [[(0, 0)]]  # finished before the fetch is given back
    assert bad.positions == []  # no lag noted for what was not applied


def test_records_of_a_topic_not_consumed_are_refused() -> None:
    with pytest.raises(RuntimeError, match="not consumed here"):
        asyncio.run(dispatch([Recording(DECISIONS, [])], [FakeRecord("other", 0, 0)], object()))


def test_one_subscriber_for_all_the_topics_of_a_service() -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS="localhost:1")  # type: ignore[call-arg]
    runtime = ServiceRuntime("registry", settings)
    runtime.consume(INTAKE, _never)
    runtime.consume(BPJS_MEMBERSHIPS, _never)
    with pytest.raises(ValueError, match="consumed twice"):
        runtime.consume(INTAKE, _never)
    runtime._subscribe()
    runtime._subscribe()  # once only
    [subscriber] = runtime.broker.subscribers
    assert subscriber.topic_names == [INTAKE.name, BPJS_MEMBERSHIPS.name]  # type: ignore[attr-defined]
    assert subscriber.group_id == "perlinsos-registry"  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="after start-up"):
        runtime.consume(PAYMENTS, _never)
