"""Proof of origin over a whole batch: the checks spread over threads answer, in order,
what checking each message alone answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from perlinsos_registry.origin import CHECKS_IN_PLACE, Origin
from perlinsos_shared.consumer import Incoming, decode, record_headers
from perlinsos_shared.signing import HEADER, ensure_agency_keys, write_key_ring


@dataclass
class _Record:
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "registry.intake.v1"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def _message(n: int, value: bytes, signature: str | None) -> Incoming:
    headers = [("content-type", b"application/cloudevents+json")]
    if signature is not None:
        headers.append((HEADER, signature.encode()))
    record = _Record(value, headers, offset=n)
    return Incoming(decode(record), None, record_headers(record), record)


def test_a_batch_checked_in_threads_answers_as_each_message_alone(tmp_path: Path) -> None:
    keys = ensure_agency_keys(tmp_path / "keys", ["DISHUB", "DINSOS"])
    write_key_ring(tmp_path / "keys", tmp_path / "ring.json")
    origin = Origin(tmp_path / "ring.json")
    messages, expected = [], []
    for n in range(3 * CHECKS_IN_PLACE + 5):
        agency = ("DISHUB", "DINSOS")[n % 2]
        doc = {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": f"agency/{agency}",
            "type": "perlinsos.intake.submitted.v1",
            "data": {"agency": agency, "request_id": f"r-{n}"},
        }
        value = orjson.dumps(doc)
        signature: str | None = keys[agency].sign(value)
        if n % 7 == 3:  # signed by the other agency
            signature = keys[("DINSOS", "DISHUB")[n % 2]].sign(value)
        elif n % 7 == 5:
            value = value.replace(b"r-", b"x-")  # changed after signing
        elif n % 11 == 4:
            signature = None
        messages.append(_message(n, value, signature))
        expected.append(n % 7 not in (3, 5) and not (n % 11 == 4))
    assert asyncio.run(origin.verified_all(messages)) == expected
    assert [origin.verified(m) for m in messages] == expected
    few = messages[:CHECKS_IN_PLACE]
    assert asyncio.run(origin.verified_all(few)) == expected[:CHECKS_IN_PLACE]
