"""Publishing to `registry.intake.v1` exactly as an upstream agency does, and listening
for what comes back (rejections, decisions, SMS deliveries, finance summaries)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from perlinsos_devruntime.cohort import Submission
from perlinsos_shared import intake_client
from perlinsos_shared.topics import DECISIONS, DELIVERIES, INTAKE_REJECTED, SUMMARIES


async def publish_submissions(
    bootstrap: str,
    items: Iterable[tuple[str, str, dict[str, Any]]],
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Publish (agency, nik key, data) submissions; each starts its own trace."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        return await intake_client.publish_submissions(producer, items, on_sent)
    finally:
        await producer.stop()


@dataclass
class Outcomes:
    """What the agency and finance sides have seen so far."""

    rejections: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    decisions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, str] = field(default_factory=dict)  # decision_id -> status
    summaries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Every event counted, none overwritten: a duplicate shows as a count of 2.
    rejection_count: Counter[tuple[str, str]] = field(default_factory=Counter)
    decision_count: Counter[str] = field(default_factory=Counter)  # per decision id
    delivery_count: Counter[str] = field(default_factory=Counter)  # per decision id
    # Kept up to date as events arrive, so waiting on 24,300 keys costs nothing per poll.
    watched: set[tuple[str, str]] = field(default_factory=set)
    settled_keys: set[tuple[str, str]] = field(default_factory=set)

    def watch(self, keys: Iterable[tuple[str, str]]) -> None:
        self.watched.update(keys)
        self.settled_keys.update(
            k for k in self.watched if k in self.rejections or k in self.decisions
        )

    def settled(self, keys: set[tuple[str, str]]) -> int:
        if keys is self.watched or keys == self.watched:
            return len(self.settled_keys)
        return sum(1 for k in keys if k in self.rejections or k in self.decisions)

    def decision_ids(self) -> set[str]:
        """The current decision of every watched submission that has one."""
        return {d["decision_id"] for k, d in self.decisions.items() if k in self.watched}

    def delivered(self, decision_ids: set[str]) -> int:
        return len(decision_ids & self.deliveries.keys())

    def reasons_by(self, keys: set[tuple[str, str]]) -> Counter[str]:
        out: Counter[str] = Counter()
        for k in keys:
            for code in self.rejections.get(k, []):
                out[code] += 1
            d = self.decisions.get(k)
            if d is not None and d["outcome"] == "ineligible":
                out.update(r["code"] for r in d["reasons"])
        return out


class Listener:
    """Reads the reply, decision, delivery and summary topics from the beginning."""

    TOPICS = (INTAKE_REJECTED, DECISIONS, DELIVERIES, SUMMARIES)

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
        )
        self.outcomes = Outcomes()

    async def start(self) -> None:
        await self.consumer.start()
        parts = []
        for t in self.TOPICS:
            for p in self.consumer.partitions_for_topic(t.name) or range(t.partitions):
                parts.append(TopicPartition(t.name, p))
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def wait_settled(self, keys: set[tuple[str, str]], timeout: float = 90) -> None:
        """Until every submission in `keys` has a refusal or a decision, and every such
        decision's SMS outcome has been published."""
        deadline = time.monotonic() + timeout
        o = self.outcomes
        while time.monotonic() < deadline:
            await self.poll()
            decided = [d for k, d in o.decisions.items() if k in keys]
            if o.settled(keys) == len(keys) and all(
                d["decision_id"] in o.deliveries for d in decided
            ):
                return
        raise AssertionError(f"only {o.settled(keys)}/{len(keys)} settled after {timeout:.0f}s")

    async def poll(self, timeout_ms: int = 200) -> int:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20000)
        n = 0
        o = self.outcomes
        for tp, records in batches.items():
            for r in records:
                n += 1
                try:
                    event = orjson.loads(r.value)
                except (TypeError, ValueError):
                    continue
                data = event.get("data") or {}
                if tp.topic == INTAKE_REJECTED.name:
                    key = (str(data.get("agency")), str(data.get("request_id")))
                    o.rejections[key] = [x["code"] for x in data.get("reasons", [])]
                    o.rejection_count[key] += 1
                    if key in o.watched:
                        o.settled_keys.add(key)
                elif tp.topic == DECISIONS.name:
                    key = (data["agency"], data["request_id"])
                    o.decision_count[data["decision_id"]] += 1
                    # the latest decision counts (a waitlisted person may be promoted later)
                    if data["outcome"] != "exited":
                        o.decisions[key] = data
                        if key in o.watched:
                            o.settled_keys.add(key)
                elif tp.topic == DELIVERIES.name:
                    o.deliveries[data["decision_id"]] = data["status"]
                    o.delivery_count[data["decision_id"]] += 1
                elif tp.topic == SUMMARIES.name:
                    k = (data["funding_line"], data["period"])
                    if k not in o.summaries or o.summaries[k]["revision"] < data["revision"]:
                        o.summaries[k] = data
        return n


@asynccontextmanager
async def settled_run(
    bootstrap: str, subs: Sequence[Submission], timeout: float = 90
) -> AsyncIterator[Listener]:
    """Publish submissions as their agencies would and wait until every one is decided or
    refused and every decision's SMS outcome is out; the listener stays open inside."""
    listener = Listener(bootstrap)
    await listener.start()
    try:
        await publish_submissions(bootstrap, ((s.agency, s.data["nik"], s.data) for s in subs))
        await listener.wait_settled({(s.agency, s.request_id) for s in subs}, timeout=timeout)
        yield listener
    finally:
        await listener.stop()


def by_line(pairs: Iterable[tuple[tuple[str, str], str]]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for key, line in pairs:
        out[line].add(key)
    return out
