"""The notify service: decisions in, SMS out through the configured provider."""

from __future__ import annotations

import asyncio
import os

from perlinsos_notify.handlers import make_handler
from perlinsos_notify.providers import make_provider
from perlinsos_notify.render import check_fits
from perlinsos_notify.sender import Sender
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS

# Test hook: a notify process with this set exits (no clean-up, like `kill -9`) right after
# the provider accepted a message and before the outcome is committed. Never set it in
# production.
CRASH_AFTER_ACCEPT_ENV = "PERLINSOS_NOTIFY_CRASH_AFTER_ACCEPT"


def _crash() -> None:
    os._exit(86)


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The notify service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("notify", settings)
    check_fits(runtime.settings.sms_brand, runtime.settings.sms_help_line)  # else refuse
    wake = asyncio.Event()  # the sender's: set once a batch of new messages has committed
    runtime.consume(DECISIONS, make_handler(runtime.settings), after_commit=wake.set)
    sender = Sender.from_settings(
        runtime.settings,
        lambda: runtime.pool,
        make_provider(runtime.settings),
        wake,
        after_commit=lambda: runtime.relay.wake() if runtime.relay else None,
        on_accepted=_crash if os.environ.get(CRASH_AFTER_ACCEPT_ENV) == "1" else None,
    )

    # supervised loops: an error (the database away, the liveness lock lost) ends the loop
    # and the runtime starts it again with backoff; the provider's connections stay open
    runtime.background(sender.run, name="sms-sender")
    runtime.background(sender.reconciler.run, name="sms-reconciler")
    runtime.app.after_shutdown(sender.close)
    return runtime


def main() -> None:
    build().run()
