"""PostgreSQL login roles: one per service, one read-only for operators, made at set-up.

The wall between services is the login itself. Each service logs in as its own role
(`perlinsos_<service>`): not a superuser, no CREATEROLE or CREATEDB, owner of its own
schema and nothing else (no rights on the database's `public` schema or on any other
service's schema). `RESET ROLE` returns such a connection to that same role, so there is
nothing to escape to. Operators read through `perlinsos_reader` (SELECT on every
service's tables, read-only transactions); commands that change something log in as the
service whose state they change.

A privileged login is used once, here, at set-up: `perlinsos up` and the cohort run
(`provision` from the stack), the compose init job and the Kubernetes Job
(`python -m perlinsos_shared.db_roles`, admin URL and passwords from the environment).
Running it again is harmless: it sets the passwords it is given (that is how a password
is rotated) and re-grants the reader on tables made since.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

SERVICES = ("registry", "eligibility", "premium", "notify")
READER = "perlinsos_reader"


def login_role(service: str) -> str:
    return f"perlinsos_{service}"


def login_url(admin_url: str, role: str, password: str) -> str:
    """`admin_url` (host, port, database, options) logging in as `role` instead."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


async def is_privileged(conn: asyncpg.Connection) -> bool:
    """Whether this connection's login could reach beyond one service's schema."""
    return bool(
        await conn.fetchval(
            "SELECT rolsuper OR rolcreaterole OR rolbypassrls FROM pg_roles"
            " WHERE rolname = session_user"
        )
    )


async def _login_role(conn: asyncpg.Connection, role: str, password: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    statement = await conn.fetchval(
        "SELECT format('%s ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        " NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text, $3::text)",
        "ALTER" if exists else "CREATE",
        role,
        password,
    )
    try:
        await conn.execute(statement)
    except asyncpg.DuplicateObjectError:  # made meanwhile from another database
        await conn.execute(statement.replace("CREATE ROLE", "ALTER ROLE", 1))


async def provision(
    admin_url: str,
    passwords: Mapping[str, str],
    reader_password: str | None = None,
) -> None:
    """Make (or update) each service's login role and schema, and the operators' reader.

    `passwords` maps service name to its password. Needs a privileged login, once.
    """
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('perlinsos-bootstrap'))")
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for service, password in passwords.items():
                role = login_role(service)
                await _login_role(conn, role, password)
                await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
                await conn.execute(
                    f'CREATE SCHEMA IF NOT EXISTS "{service}" AUTHORIZATION "{role}"'
                )
                await conn.execute(f'ALTER SCHEMA "{service}" OWNER TO "{role}"')
                await conn.execute(f'REVOKE ALL ON SCHEMA "{service}" FROM PUBLIC')
            if reader_password is not None:
                await _login_role(conn, READER, reader_password)
                await conn.execute(f'ALTER ROLE "{READER}" SET default_transaction_read_only = on')
                await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{READER}"')
                for service in passwords:
                    role = login_role(service)
                    await conn.execute(f'GRANT USAGE ON SCHEMA "{service}" TO "{READER}"')
                    await conn.execute(
                        f'GRANT SELECT ON ALL TABLES IN SCHEMA "{service}" TO "{READER}"'
                    )
                    await conn.execute(
                        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{role}" IN SCHEMA "{service}"'
                        f' GRANT SELECT ON TABLES TO "{READER}"'
                    )
    finally:
        await conn.close()


def _from_environment() -> tuple[str, dict[str, str], str | None]:
    """Admin URL and passwords for the compose init job and the Kubernetes Job."""
    admin_url = os.environ.get("PERLINSOS_DB_ADMIN_URL")
    if not admin_url:
        raise SystemExit("PERLINSOS_DB_ADMIN_URL is not set")
    passwords = {
        s: os.environ[f"PERLINSOS_DB_PASSWORD_{s.upper()}"]
        for s in SERVICES
        if os.environ.get(f"PERLINSOS_DB_PASSWORD_{s.upper()}")
    }
    missing = [s for s in SERVICES if s not in passwords]
    if missing:
        raise SystemExit(f"no password for: {', '.join(missing)} (PERLINSOS_DB_PASSWORD_<SERVICE>)")
    return admin_url, passwords, os.environ.get("PERLINSOS_DB_PASSWORD_READER") or None


def main() -> None:
    admin_url, passwords, reader = _from_environment()
    asyncio.run(provision(admin_url, passwords, reader))
    print(f"login roles ready: {', '.join(login_role(s) for s in passwords)}", file=sys.stderr)


if __name__ == "__main__":
    main()
