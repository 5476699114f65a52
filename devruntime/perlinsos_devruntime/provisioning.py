"""Credentials the stack makes for itself at start: database logins and agency keys.

`perlinsos up`, the cohort run and the test stack hold the privileged URL only to call
`provision_logins`; every service process gets its own login (`perlinsos_<service>`) and
operator commands get the read-only `perlinsos_reader` (see `perlinsos_shared.db_roles`).
Passwords live in `<state>/secrets/` (owner-only), made on first use. The demo agencies'
signing keys live there too; registry gets the file of their public keys (`KEYS_ENV`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from perlinsos_devruntime.credentials import state_secret
from perlinsos_devruntime.embedded import run_coro
from perlinsos_shared.access import ensure_agency_topics
from perlinsos_shared.db_roles import READER, SERVICES, login_role, login_url, provision
from perlinsos_shared.settings import Settings
from perlinsos_shared.signing import (
    agency_keys_dir,
    ensure_agency_keys,
    use_keys_dir,
    write_key_ring,
)

log = logging.getLogger("perlinsos.provisioning")


@dataclass(frozen=True)
class Logins:
    """Where each service logs in, and the operators' read-only login."""

    services: dict[str, str]
    reader: str


def provision_logins(
    admin_url: str, state_dir: Path, services: tuple[str, ...] = SERVICES
) -> Logins:
    passwords = {s: state_secret(state_dir, f"db-{login_role(s)}") for s in services}
    reader_password = state_secret(state_dir, f"db-{READER}")
    try:
        run_coro(provision(admin_url, passwords, reader_password))
    except asyncpg.InsufficientPrivilegeError:
        # DATABASE_URL is already an unprivileged login: use it as it is (the services
        # then run only if it is each one's own role; see docs/SECURITY.md).
        log.warning("DATABASE_URL cannot make login roles; services use it as given")
        return Logins({s: admin_url for s in services}, admin_url)
    return Logins(
        {s: login_url(admin_url, login_role(s), passwords[s]) for s in services},
        login_url(admin_url, READER, reader_password),
    )


DEMO_AGENCIES = ("DISNAKER", "DISHUB", "PERIKANAN", "KELURAHAN")


def provision_agency_topics(settings: Settings, agencies: tuple[str, ...] = DEMO_AGENCIES) -> None:
    """Each demo agency's own reply topic (`registry.intake-rejected.<AGENCY>.v2`)."""
    run_coro(ensure_agency_topics(settings, agencies))


def provision_agency_keys(state_dir: Path, agencies: tuple[str, ...] = DEMO_AGENCIES) -> Path:
    """The demo agencies' signing keys (made if missing, owner-only) and the file of their
    public keys that registry checks against; returns that file. Agency clients in this
    process sign with these keys from now on."""
    keys_dir = agency_keys_dir(state_dir)
    ensure_agency_keys(keys_dir, agencies)
    ring = Path(state_dir) / "agency-keys.json"
    write_key_ring(keys_dir, ring)
    use_keys_dir(keys_dir)
    return ring.resolve()
