"""Files exchanged with BPJS Ketenagakerjaan: the column map, reading CSV/XLSX, writing
personal-data files.

Nothing here touches a database or the broker: a file is read into plain rows (its row
number in the file kept, so every outcome names the row a person can find), and written
owner-only. Files holding NIKs are marked RAHASIA in their name and properties; an upload
file keeps BPJS's header on the first row (a notice row above it would break the upload),
so the XLSX carries the notice on a sheet of its own and in its properties.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

PERSONAL_DATA_NOTICE = (
    "RAHASIA - berisi data pribadi (NIK, nama, alamat, nomor HP) peserta; hanya untuk "
    "pendaftaran dan rekonsiliasi dengan BPJS Ketenagakerjaan. Jangan disebarluaskan "
    "(UU 27/2022 Pelindungan Data Pribadi)."
)


class UnreadableFile(Exception):
    """The file as a whole cannot be read: nothing is changed."""


@dataclass(frozen=True)
class ColumnMap:
    registration: tuple[tuple[str, str], ...]  # (header, field) in column order
    programmes: str
    declared_income_idr: int
    memberships: Mapping[str, tuple[str, ...]]  # value -> accepted headers
    already_member: tuple[str, ...]
    invoice: Mapping[str, tuple[str, ...]]


def load_column_map(path: Path | None = None) -> ColumnMap:
    """The city's column map (`--columns FILE`), or the one shipped with perlinsos."""
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else files("perlinsos_cli.bpjs").joinpath("columns.yaml").read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text)
    return ColumnMap(
        registration=tuple((str(c["header"]), str(c["field"])) for c in data["registration"]),
        programmes=str(data["programmes"]),
        declared_income_idr=int(data["declared_income_idr"]),
        memberships={k: tuple(map(str, v)) for k, v in data["memberships"].items()},
        already_member=tuple(map(str, data["already_member"])),
        invoice={k: tuple(map(str, v)) for k, v in data["invoice"].items()},
    )


def header_key(header: str) -> str:
    """Headers compare without case, spaces or punctuation: "No. KPJ" == "NO KPJ"."""
    return re.sub(r"[^0-9a-z]", "", header.casefold())


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]  # (row number in the file, header -> text)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "date") and hasattr(value, "hour"):  # a datetime cell
        return str(value.date().isoformat())
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _table(raw: Iterable[tuple[int, Sequence[Any]]]) -> Table:
    headers: tuple[str, ...] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for number, cells in raw:
        texts = [_text(c) for c in cells]
        if not any(texts):
            continue
        if headers is None:
            headers = tuple(texts)
            continue
        rows.append(
            (number, {h: (texts[i] if i < len(texts) else "") for i, h in enumerate(headers) if h})
        )
    if headers is None:
        raise UnreadableFile("the file has no header row")
    return Table(headers, tuple(rows))


def read_table(path: Path) -> Table:
    """A CSV (`,` `;` or tab, UTF-8 with or without BOM) or an XLSX (first sheet)."""
    try:
        if path.suffix.casefold() in (".xlsx", ".xlsm"):
            from openpyxl import load_workbook

            wb = load_workbook(path, read_only=True, data_only=True)
            ws = wb.worksheets[0]
            table = _table(enumerate(ws.iter_rows(values_only=True), start=1))
            wb.close()
            return table
        text = path.read_bytes().decode("utf-8-sig")
    except UnreadableFile:
        raise
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise UnreadableFile(f"{type(exc).__name__}: {exc}"[:200]) from None
    except Exception as exc:  # openpyxl raises zipfile/lxml errors for a file that is not XLSX
        raise UnreadableFile(f"not a readable XLSX or CSV ({type(exc).__name__})") from None
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    return _table(enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1))


def find_columns(
    headers: Sequence[str], wanted: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, str], list[str]]:
    """value -> the file's header for it, and the values with no column."""
    by_key = {header_key(h): h for h in headers if h}
    found: dict[str, str] = {}
    for value, accepted in wanted.items():
        for a in accepted:
            if header_key(a) in by_key:
                found[value] = by_key[header_key(a)]
                break
    return found, [v for v in wanted if v not in found]


def _owner_only(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before any byte is written, not chmod-ed afterwards.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return path


def write_personal_csv(path: Path, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """`;`-separated UTF-8 with BOM (id-ID Excel), owner-only."""
    _owner_only(path)
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(list(headers))
        w.writerows(list(r) for r in rows)
    return path


def write_personal_xlsx(
    path: Path,
    title: str,
    sheets: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]],
    text_columns: frozenset[str] = frozenset({"NIK", "KPJ"}),
) -> Path:
    """One sheet per (name, headers, rows), headers on row 1; the notice on a last sheet
    and in the properties; NIK/KPJ columns as text (leading zeros kept); owner-only."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.properties.title = title
    wb.properties.subject = "RAHASIA - berisi data pribadi"
    wb.properties.keywords = "RAHASIA; data pribadi; NIK"
    wb.properties.description = PERSONAL_DATA_NOTICE
    wb.properties.creator = "perlinsos"
    wb.remove(wb.active)
    for name, headers, rows in sheets:
        ws = wb.create_sheet(name[:31])
        ws.append(list(headers))
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for r in rows:
            ws.append(list(r))
        for i, h in enumerate(headers, start=1):
            if any(header_key(t) in header_key(h) for t in text_columns):
                for (cell,) in ws.iter_rows(min_row=2, min_col=i, max_col=i):
                    cell.number_format = "@"
        ws.freeze_panes = "A2"
    notice = wb.create_sheet("RAHASIA")
    notice["A1"] = PERSONAL_DATA_NOTICE
    notice["A1"].font = Font(bold=True, color="C00000")
    notice["A2"] = title
    _owner_only(path)
    wb.save(path)
    os.chmod(path, 0o600)
    return path
