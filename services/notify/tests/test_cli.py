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
    assert "undeliverable" in shown.output and "PHONE_NOT_MOBILE" in shown.output
    assert "217101********01" in shown.output and nik not in shown.output
    assert "+62778123456" not in shown.output  # the phone is masked too
    by_id = runner.invoke(app, ["status", d.participant_id], env={"COLUMNS": "200"})
    assert by_id.exit_code == 0 and "undeliverable" in by_id.output
    missing = runner.invoke(app, ["status", "2171019999990001"])
    assert missing.exit_code == 1
    failed = runner.invoke(app, ["failures"], env={"COLUMNS": "200"})
    assert failed.exit_code == 0 and "PHONE_NOT_MOBILE" in failed.output
    assert "pending" not in failed.output


def test_resend_an_unconfirmed_or_failed_message_is_recorded_in_its_history(
    cli_env: str,
) -> None:
    nik = "2171015509900002"
    unconfirmed, failed, fresh = decision(nik=nik), decision(), decision()

    async def setup() -> None:
        pool = await open_service_db(cli_env, "notify")
        try:
            await store(pool, sms_settings(), [unconfirmed, failed, fresh])
            # handed over 20 minutes ago, and the provider's list cannot say since
            await pool.execute(
                "UPDATE messages SET status = 'sending', attempts = 1, claimed_by = NULL,"
                " unconfirmed_since = now() - interval '20 minutes' WHERE decision_id = $1",
                unconfirmed.decision_id,
            )
            await pool.execute(
                "UPDATE messages SET status = 'failed', attempts = 9,"
                " error_code = 'RETRIES_EXHAUSTED' WHERE decision_id = $1",
                failed.decision_id,
            )
            # just sent and unanswered: too early to resend
            await pool.execute(
                "UPDATE messages SET status = 'sending', unconfirmed_since = now()"
                " WHERE decision_id = $1",
                fresh.decision_id,
            )
        finally:
            await pool.close()

    asyncio.run(setup())
    runner = CliRunner()
    listed = runner.invoke(app, ["failures"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert "unconfirmed" in listed.output and "RETRIES_EXHAUSTED" in listed.output
    assert f"sms-{unconfirmed.decision_id}" in listed.output
    assert f"sms-{fresh.decision_id}" not in listed.output

    note = ["--note", "not in the provider console", "--by", "ops-desk"]
    ok = runner.invoke(app, ["resend", f"sms-{unconfirmed.decision_id}", *note])
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(app, ["resend", f"sms-{failed.decision_id}", *note]).exit_code == 0
    early = runner.invoke(app, ["resend", f"sms-{fresh.decision_id}", *note])
    assert early.exit_code == 1 and "being sent" in early.output
    assert runner.invoke(app, ["resend", "sms-nope", *note]).exit_code == 1

    async def state() -> list[dict[str, object]]:
        pool = await open_service_db(cli_env, "notify")
        try:
            return [
                dict(r)
                for r in await pool.fetch(
                    "SELECT m.decision_id, m.status, m.claimed_by, a.outcome, a.actor, a.error"
                    " FROM messages m JOIN message_attempts a USING (message_id)"
                    " WHERE a.outcome = 'resend' ORDER BY a.id"
                )
            ]
        finally:
            await pool.close()

    rows = asyncio.run(state())
    assert [(r["decision_id"], r["status"], r["actor"]) for r in rows] == [
        (unconfirmed.decision_id, "pending", "ops-desk"),
        (failed.decision_id, "pending", "ops-desk"),
    ]
    assert "not in the provider console" in str(rows[0]["error"])
    # a resent message is pending again: a second resend is refused (nothing to resend)
    again = runner.invoke(app, ["resend", f"sms-{failed.decision_id}", *note])
    assert again.exit_code == 1 and "pending" in again.output
    history = runner.invoke(app, ["status", nik], env={"COLUMNS": "250"})
    assert "resent by ops-desk" in history.output
