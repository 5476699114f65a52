"""Publishing a payment record to `premium.payments.v1`, as a finance system would."""

from __future__ import annotations

from perlinsos_shared.envelope import CONTENT_TYPE, encode, make_event
from perlinsos_shared.events import PaymentRecorded
from perlinsos_shared.operator import operator_producer
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PAYMENTS

SOURCE = "finance/perlinsos-cli"


async def publish_payment(settings: Settings, payment: PaymentRecorded) -> str:
    key = f"{payment.funding_line.value}:{payment.period}"
    event = make_event(SOURCE, payment, subject=key)
    async with operator_producer("perlinsos-finance", settings) as producer:
        await producer.send_and_wait(
            PAYMENTS.name,
            encode(event),
            key=key.encode(),
            headers=[("content-type", CONTENT_TYPE.encode())],
        )
    return event.id
