"""The premium service: decisions in, ledger and finance summaries out."""

from __future__ import annotations

from perlinsos_premium.handlers import handle_decisions
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The premium service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("premium", settings)
    runtime.consume(DECISIONS, handle_decisions)
    return runtime


def main() -> None:
    build().run()
