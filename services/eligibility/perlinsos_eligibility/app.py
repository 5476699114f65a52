"""The eligibility service: participants in, decisions out."""

from __future__ import annotations

from perlinsos_eligibility.handlers import handle_participants
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PARTICIPANTS


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The eligibility service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("eligibility", settings)
    runtime.consume(PARTICIPANTS, handle_participants)
    return runtime


def main() -> None:
    build().run()
