"""Publishing to `registry.intake.v1` as an upstream agency system does.

The public intake contract, from the sending side: a structured-mode CloudEvent
`perlinsos.enrolment.submitted.v1` keyed by NIK, signed with the agency's own key
(`perlinsos-signature`, see `signing.py`), with W3C trace context in the headers (each
submission starts its own trace). Used by the cohort run and the CSV import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from perlinsos_shared.clock import now_local
from perlinsos_shared.envelope import CONTENT_TYPE, new_id
from perlinsos_shared.events import EnrolmentSubmitted
from perlinsos_shared.signing import HEADER, AgencyKey, default_keys_dir, signing_key
from perlinsos_shared.topics import INTAKE

tracer = trace.get_tracer("perlinsos.agency")


def submission_event(agency: str, data: dict[str, Any]) -> bytes:
    """A `perlinsos.enrolment.submitted.v1` CloudEvent, structured mode, as JSON bytes."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": new_id(),
            "source": f"agency/{agency}",
            "type": EnrolmentSubmitted.event_type,
            "time": now_local().isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
    )


async def publish_submissions(
    producer: AIOKafkaProducer,
    items: Iterable[tuple[str, str, dict[str, Any]]],
    on_sent: Callable[[int], None] | None = None,
    flush_every: int = 2000,
    keys_dir: Path | None = None,
) -> int:
    """Publish (agency, key, data) submissions in order, each signed with its agency's
    key from `keys_dir` (default: the stack's); returns how many were sent."""
    sent = 0
    pending = []
    signers: dict[str, AgencyKey] = {}
    folder = keys_dir or default_keys_dir()
    for agency, key, data in items:
        signer = signers.get(agency)
        if signer is None:
            signer = signers[agency] = signing_key(folder, agency)
        with tracer.start_as_current_span(
            f"{INTAKE.name} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": INTAKE.name,
                "perlinsos.agency": agency,
                "perlinsos.request_id": str(data.get("request_id", "")),
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            value = submission_event(agency, data)
            headers = [("content-type", CONTENT_TYPE.encode())]
            headers += [(k, v.encode()) for k, v in carrier.items()]
            headers.append((HEADER, signer.sign(value).encode()))
            pending.append(
                await producer.send(INTAKE.name, value, key=key.encode(), headers=headers)
            )
        sent += 1
        if len(pending) >= flush_every:
            for f in pending:
                await f
            if on_sent:
                on_sent(len(pending))
            pending.clear()
    for f in pending:
        await f
    if on_sent and pending:
        on_sent(len(pending))
    return sent
