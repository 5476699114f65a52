"""Publishing a payment record to `premium.payments.v1`, as a finance system would."""

from __future__ import annotations

from perlinsos_shared.envelope import encode, make_event
from perlinsos_shared.events import PaymentRecorded
from perlinsos_shared.kafka import make_broker
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PAYMENTS

SOURCE = "finance/perlinsos-cli"


async def publish_payment(settings: Settings, payment: PaymentRecorded) -> str:
    event = make_event(SOURCE, payment, subject=f"{payment.funding_line.value}:{payment.period}")
    broker = make_broker(settings, client_id="perlinsos-finance")
    async with broker:
        await broker.publish(
            encode(event),
            PAYMENTS.name,
            key=f"{payment.funding_line.value}:{payment.period}".encode(),
            headers={"content-type": "application/cloudevents+json"},
        )
    return event.id
