"""`perlinsos notify status NIK` shows one participant's SMS without showing the NIK."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from perlinsos_notify.cli import app
from perlinsos_shared.db import open_service_db

from .conftest import decision, sms_settings, store

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process


def test_status_by_nik_and_failures(cli_env: str) -> None:
    nik = "2171015509900001"
    d = decision(nik=nik, phone_e164="+62778123456", first_name="Rina")

    async def setup() -> None:
        pool = await open_service_db(cli_env, "notify")
        try:
            await store(pool, sms_settings(), [d, decision()])
        finally:
            await pool.close()

    asyncio.run(setup())
    runner = CliRunner()
    shown = runner.invoke(app, ["status", nik], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "undeliverable" in shown.output and "NOMOR_BUKAN_SELULER" in shown.output
    assert "217101********01" in shown.output and nik not in shown.output
    assert "+62778123456" not in shown.output  # the phone is masked too
    by_id = runner.invoke(app, ["status", d.participant_id], env={"COLUMNS": "200"})
    assert by_id.exit_code == 0 and "undeliverable" in by_id.output
    missing = runner.invoke(app, ["status", "2171019999990001"])
    assert missing.exit_code == 1
    failed = runner.invoke(app, ["failures"], env={"COLUMNS": "200"})
    assert failed.exit_code == 0 and "NOMOR_BUKAN_SELULER" in failed.output
    assert "pending" not in failed.output
