"""The notify service: decisions in, SMS out through the configured provider."""

from __future__ import annotations

import asyncio

from perlinsos_notify.handlers import Sender, make_handler
from perlinsos_notify.providers import make_provider
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The notify service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("notify", settings)
    _wake = asyncio.Event()
    runtime.consume(DECISIONS, make_handler(runtime.settings, _wake))
    sender = Sender(
        lambda: runtime.pool,
        make_provider(runtime.settings),
        _wake,
        after_commit=lambda: runtime.relay.wake() if runtime.relay else None,
    )
    runtime.background(sender.run)
    return runtime


def main() -> None:
    build().run()
