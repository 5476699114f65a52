"""Database logins for the stack: made once at start with the privileged URL.

`perlinsos up`, the cohort run and the test stack hold the privileged URL only to call
`provision_logins`; every service process gets its own login (`perlinsos_<service>`) and
operator commands get the read-only `perlinsos_reader` (see `perlinsos_shared.db_roles`).
Passwords live in `<state>/secrets/` (owner-only), made on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from perlinsos_shared.credentials import state_secret
from perlinsos_shared.db_roles import READER, SERVICES, login_role, login_url, provision

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
        _run(provision(admin_url, passwords, reader_password))
    except asyncpg.InsufficientPrivilegeError:
        # DATABASE_URL is already an unprivileged login: use it as it is (the services
        # then run only if it is each one's own role; see docs/SECURITY.md).
        log.warning("DATABASE_URL cannot make login roles; services use it as given")
        return Logins({s: admin_url for s in services}, admin_url)
    return Logins(
        {s: login_url(admin_url, login_role(s), passwords[s]) for s in services},
        login_url(admin_url, READER, reader_password),
    )


def _run(coro: object) -> None:
    """Run a coroutine to completion, also when called from a thread with a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]
