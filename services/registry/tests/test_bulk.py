"""The CSV side of the bulk import, on plain values."""

from __future__ import annotations

from pathlib import Path

from perlinsos_registry import bulk
from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.validation import check_enrolment


def test_template_row_is_a_valid_submission() -> None:
    rows = bulk.read_rows(bulk.template_csv())
    assert list(rows[0]) == list(bulk.COLUMN_NAMES)
    request_id, data = bulk.row_to_submission(rows[0], "DISHUB", 2, "template")
    assert request_id == "DISHUB-2025-000001"
    checked = check_enrolment(data, "agency/DISHUB", AgencyPolicy.load())
    assert checked.reasons == []


def test_spreadsheet_habits() -> None:
    text = (
        "\ufeffNIK;Full Name;birth_date;sex;phone;kecamatan;kelurahan;rt;rw;occupation;"
        "association;existing_bpjs_tk\n"
        "'2171101505900003;Budi;15/05/1990;l;'081234567890;Batam Kota;Belian;3;5;"
        "becak;Paguyuban Becak;Ya\n"
        ";;;;;;;;;;;\n"
    )
    rows = bulk.read_rows(text)
    assert len(rows) == 1  # the empty line is dropped
    request_id, data = bulk.row_to_submission(rows[0], "DISHUB", 2, "januari")
    assert request_id == "januari-00002"
    assert data["nik"] == "2171101505900003"
    assert data["birth_date"] == "1990-05-15"
    assert data["sex"] == "L"
    assert data["phone"] == "081234567890"
    assert data["occupation"] == "BECAK"
    assert data["evidence"] == {"association": "Paguyuban Becak"}
    assert data["existing_bpjs_tk"] is True


def test_unreadable_yes_no_is_left_for_registry_to_refuse() -> None:
    _, data = bulk.row_to_submission({"existing_bpjs_tk": "mungkin"}, "DISHUB", 2, "f")
    assert data["existing_bpjs_tk"] == "mungkin"
    codes = {r.code for r in check_enrolment(data, "agency/DISHUB", AgencyPolicy.load()).reasons}
    assert "SCHEMA_INVALID" in codes


def test_result_csv(tmp_path: Path) -> None:
    target = bulk.result_path(tmp_path / "januari.csv")
    assert target.name == "januari.result.csv"
    bulk.write_results(
        target,
        [
            bulk.RowOutcome(2, "r-1", "accepted", []),
            bulk.RowOutcome(
                3, "r-2", "refused", [{"code": "PHONE_INVALID", "field": "phone", "message": "x"}]
            ),
        ],
    )
    lines = target.read_text().splitlines()
    assert lines[0] == ",".join(bulk.RESULT_COLUMNS)
    assert lines[2] == "3,r-2,refused,PHONE_INVALID,phone: x"
