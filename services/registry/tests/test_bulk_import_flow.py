"""`perlinsos intake import` and `perlinsos registry audit` against the running registry."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from perlinsos_devruntime.stack import Stack
from perlinsos_registry import cli
from perlinsos_shared.settings import Settings

pytestmark = pytest.mark.flow

HEADER = (
    "request_id,nik,full_name,birth_date,sex,phone,kecamatan,kelurahan,rt,rw,street,"
    "occupation,sk_number,kusuka_number,platform,driver_id,association,existing_bpjs_tk"
)
ROWS = [
    # accepted: ojek with platform, date as DD/MM/YYYY, bare 62 phone
    ",2171101505900003,Budi Santoso,15/05/1990,L,62811234567,Batam Kota,Belian,3,5,,"
    "OJEK_DARING,,,GRAB,G-1,,tidak",
    # refused: phone with letters and no evidence
    "R-2,2171105506920001,Sri Wahyuni,1992-06-15,P,0812abc4567,Sekupang,Tiban Lama,1,2,,"
    "BECAK,,,,,,",
    # refused: DISHUB may not enrol a fisher
    "R-3,2171100101800001,Ahmad,1980-01-01,L,081298765432,Galang,Karas,1,1,,NELAYAN,,K-1,,,,",
]


def test_import_writes_results_and_audit_lists_changes(
    registry_stack: Stack, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "dishub-oktober.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    monkeypatch.setattr("perlinsos_shared.operator.resolved_settings", lambda: settings)
    monkeypatch.setattr(cli, "console", Console(width=300))

    result = CliRunner().invoke(cli.intake_app, ["import", str(source), "--agency", "dishub"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "dishub-oktober.result.csv").open()))
    assert [(r["row"], r["request_id"], r["status"]) for r in rows] == [
        ("2", "dishub-oktober-00002", "accepted"),
        ("3", "R-2", "refused"),
        ("4", "R-3", "refused"),
    ]
    assert rows[1]["reason_codes"].split(";") == ["PHONE_INVALID", "EVIDENCE_MISSING"]
    assert rows[2]["reason_codes"] == "AGENCY_NOT_ALLOWED"
    assert "phone: Nomor telepon tidak valid" in rows[1]["reason_messages"]

    # importing the same file again: same request ids, same outcomes, nothing new
    outcomes = asyncio.run(
        cli.run_import(settings, source.read_text(), source.stem, "DISHUB", timeout=30)
    )
    assert [o.status for o in outcomes] == ["accepted", "refused", "refused"]

    audit = CliRunner().invoke(cli.app, ["audit", "2171101505900003"])
    assert audit.exit_code == 0, audit.output
    assert "enrolled" in audit.output and "dishub-oktober-00002" in audit.output
    assert "2171101505900003" not in audit.output and "Budi" not in audit.output
    assert "217110********03" in audit.output
    shown = CliRunner().invoke(cli.app, ["audit", "2171101505900003", "--show-nik"])
    assert "2171101505900003" in shown.output and "+62811234567" in shown.output
