"""The registry service: intake from agencies in, participants out."""

from __future__ import annotations

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.bpjs import handle_memberships
from perlinsos_registry.handlers import make_handler, on_undecodable
from perlinsos_registry.origin import Origin
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import BPJS_MEMBERSHIPS, INTAKE


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The registry service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("registry", settings)
    runtime.consume(
        INTAKE,
        make_handler(AgencyPolicy.load(), Origin.load(runtime.settings.agency_keys)),
        on_undecodable=on_undecodable,
    )
    runtime.consume(BPJS_MEMBERSHIPS, handle_memberships)
    return runtime


def main() -> None:
    build().run()
