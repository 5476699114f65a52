"""BPJS files as plain values: the answer to a registration and the monthly bill, good and bad."""

from __future__ import annotations

import stat
from datetime import date
from pathlib import Path

import pytest

from perlinsos_cli.bpjs import invoice as inv
from perlinsos_cli.bpjs import memberships as mem
from perlinsos_cli.bpjs.files import (
    UnreadableFile,
    load_column_map,
    read_table,
    write_personal_csv,
    write_personal_xlsx,
)

COLUMNS = load_column_map()
NIK_A = "2171011708900001"
NIK_B = "2171011708900002"
NIK_C = "2171011708900003"
NIK_D = "2171011708900004"


def _csv(tmp_path: Path, text: str, name: str = "jawaban.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _answers(tmp_path: Path, text: str) -> list[mem.MembershipRow]:
    return mem.read_memberships(read_table(_csv(tmp_path, text)), COLUMNS)


HEADER = "NIK;No KPJ;Tanggal Mulai Kepesertaan;Alasan Penolakan\n"


def test_an_answer_file_gives_each_row_its_outcome(tmp_path: Path) -> None:
    rows = _answers(
        tmp_path,
        HEADER
        + f"{NIK_A};26012345678;01/02/2026;\n"
        + f"{NIK_B};;;Sudah terdaftar sebagai peserta aktif\n"
        + f"{NIK_C};;;Nama tidak sesuai KTP\n"
        + f"{NIK_A};26012345679;01/02/2026;\n"
        + "12345;26012345670;01/02/2026;\n"
        + f"{NIK_D};2601;01/02/2026;\n"
        + ";;;\n",
    )
    assert [(r.row, r.outcome) for r in rows] == [
        (2, mem.KPJ_ASSIGNED),
        (3, mem.ALREADY_BPJS_MEMBER),
        (4, mem.REFUSED),
        (5, mem.DUPLICATE_ROW),
        (6, mem.UNREADABLE_ROW),
        (7, mem.UNREADABLE_ROW),
    ]
    assert rows[0].kpj == "26012345678" and rows[0].cover_start == date(2026, 2, 1)
    assert rows[2].refusal == "Nama tidak sesuai KTP"


def test_a_row_with_a_kpj_and_a_refusal_or_neither_or_a_bad_date_is_unreadable(
    tmp_path: Path,
) -> None:
    rows = _answers(
        tmp_path,
        HEADER
        + f"{NIK_A};26012345678;01/02/2026;Nama salah\n"
        + f"{NIK_B};;;\n"
        + f"{NIK_C};26012345678;31/02/2026;\n",
    )
    assert [r.outcome for r in rows] == [mem.UNREADABLE_ROW] * 3
    assert all(r.message for r in rows)


def test_a_missing_column_gives_every_row_that_outcome(tmp_path: Path) -> None:
    rows = _answers(tmp_path, f"NIK;KPJ\n{NIK_A};26012345678\n{NIK_B};26012345679\n")
    assert [r.outcome for r in rows] == [mem.MISSING_COLUMN] * 2
    assert "TANGGAL MULAI KEPESERTAAN" in rows[0].message


def test_unknown_niks_are_marked_and_other_outcomes_kept(tmp_path: Path) -> None:
    rows = _answers(
        tmp_path, HEADER + f"{NIK_A};26012345678;2026-02-01;\n{NIK_B};26012345679;2026-02-01;\n"
    )
    marked = mem.mark_unknown(rows, {NIK_A})
    assert [r.outcome for r in marked] == [mem.KPJ_ASSIGNED, mem.UNKNOWN_NIK]


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00garbage\x80\x81", b"PK\x03\x04 not really a workbook"],
)
def test_a_file_that_cannot_be_read_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / ("bad.xlsx" if content.startswith(b"PK") else "bad.csv")
    path.write_bytes(content)
    with pytest.raises(UnreadableFile):
        read_table(path)


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile):
        read_table(tmp_path / "none.csv")


def test_xlsx_round_trip_is_owner_only_and_keeps_niks_as_text(tmp_path: Path) -> None:
    path = write_personal_xlsx(
        tmp_path / "x-RAHASIA.xlsx",
        "uji",
        [
            (
                "Jawaban",
                ["NIK", "KPJ", "TMT", "Alasan penolakan"],
                [[NIK_A, "26012345678", date(2026, 2, 1), ""]],
            )
        ],
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = read_table(path)
    rows = mem.read_memberships(table, COLUMNS)
    assert [(r.nik, r.kpj, r.cover_start) for r in rows] == [
        (NIK_A, "26012345678", date(2026, 2, 1))
    ]
    csv_path = write_personal_csv(tmp_path / "y.csv", ["NIK"], [[NIK_A]])
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o600


# --- the bill ------------------------------------------------------------------------


def _bill(tmp_path: Path, text: str, kpjs: dict[str, str] | None = None) -> list[inv.BillRow]:
    return inv.read_bill(read_table(_csv(tmp_path, text, "tagihan.csv")), COLUMNS, kpjs or {})


OWED = {
    NIK_A: inv.Owed(NIK_A, "A", 16800),
    NIK_B: inv.Owed(NIK_B, "B", 16800),
    NIK_C: inv.Owed(NIK_C, "C", 16800),
}


def test_money_reads_rupiah_as_bpjs_writes_it() -> None:
    assert [inv.money(t) for t in ("Rp16.800", "16,800", "16800", "16800.00", "x", "")] == [
        16800,
        16800,
        16800,
        16800,
        None,
        None,
    ]


def test_the_bill_lists_exactly_the_four_differences(tmp_path: Path) -> None:
    rows = _bill(
        tmp_path,
        "KPJ;NIK;Jumlah Bulan;Iuran\n"
        + "26012345678;;1;Rp16.800\n"  # A by KPJ: matched
        + f";{NIK_B};1;17800\n"  # B: wrong amount
        + f";{NIK_B};1;16800\n"  # B again: duplicate
        + f";{NIK_D};1;16800\n",  # D: not covered; C: not billed
        {"26012345678": NIK_A},
    )
    result = inv.reconcile(rows, OWED)
    assert sorted((f.code, f.row, f.reference) for f in result.problems()) == sorted(
        [
            (inv.AMOUNT_DIFFERS, 3, NIK_B),
            (inv.DUPLICATE_ROW, 4, NIK_B),
            (inv.BILLED_NOT_COVERED, 5, NIK_D),
            (inv.COVERED_NOT_BILLED, None, NIK_C),
        ]
    )
    assert result.billed_idr == 16800 + 17800 + 16800 + 16800
    assert result.owed_idr == 3 * 16800
    assert result.counts()[inv.MATCHED] == 1


def test_months_differ_and_unknown_kpj_is_billed_not_covered(tmp_path: Path) -> None:
    rows = _bill(tmp_path, f"KPJ;NIK;Bulan;Iuran\n;{NIK_A};2;33600\n99999999999;;1;16800\n")
    result = inv.reconcile(rows, {NIK_A: OWED[NIK_A]})
    assert [f.code for f in result.findings] == [inv.MONTHS_DIFFERS, inv.BILLED_NOT_COVERED]


def test_unreadable_bill_rows_and_missing_columns_get_outcomes(tmp_path: Path) -> None:
    rows = _bill(tmp_path, f"NIK;Bulan;Iuran\n123;1;16800\n{NIK_A};x;16800\n{NIK_A};1;abc\n")
    assert [f.code for f in inv.reconcile(rows, {}).findings] == [inv.UNREADABLE_ROW] * 3
    missing = _bill(tmp_path, f"NIK;Iuran\n{NIK_A};16800\n")
    result = inv.reconcile(missing, OWED)
    assert [f.code for f in result.findings][:1] == [inv.MISSING_COLUMN]
    assert result.billed_idr == 0


def test_column_map_from_the_city_replaces_the_shipped_one(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "cli/perlinsos_cli/bpjs/columns.yaml").read_text()
    custom = tmp_path / "kolom.yaml"
    custom.write_text(text.replace('"NIK", field: nik', '"NOMOR INDUK KEPENDUDUKAN", field: nik'))
    assert load_column_map(custom).registration[0] == ("NOMOR INDUK KEPENDUDUKAN", "nik")
