"""The collective (kolektif) BPU registration list: one row per person, in the columns of
the column map. Pure: the people come from the stores, the cells from here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from perlinsos_cli.bpjs.files import ColumnMap


@dataclass(frozen=True)
class Registrant:
    """Eligible on a line (eligibility) and who they are (registry), not yet given a KPJ."""

    nik: str
    full_name: str
    birth_date: date
    sex: str
    phone_e164: str
    address: dict[str, Any]
    occupation: str
    cover_start: date
    funding_line: str


def address_text(address: dict[str, Any] | str) -> str:
    a = json.loads(address) if isinstance(address, str) else address
    rt_rw = "/".join(x for x in (a.get("rt"), a.get("rw")) if x)
    parts = [
        a.get("street"),
        f"RT/RW {rt_rw}" if rt_rw else None,
        f"Kel. {a['kelurahan']}" if a.get("kelurahan") else None,
        f"Kec. {a['kecamatan']}" if a.get("kecamatan") else None,
        "Kota Batam",
    ]
    return ", ".join(p for p in parts if p)


def local_phone(e164: str) -> str:
    """+6281234567890 -> 081234567890, as Indonesian forms write it."""
    return "0" + e164[3:] if e164.startswith("+62") else e164


def cells(r: Registrant, columns: ColumnMap, *, dates_as_text: bool) -> list[Any]:
    def when(d: date) -> Any:
        return d.strftime("%d-%m-%Y") if dates_as_text else d

    values: dict[str, Any] = {
        "nik": r.nik,
        "full_name": r.full_name,
        "birth_place": "",  # not collected at intake: BPJS's form accepts it empty
        "birth_date": when(r.birth_date),
        "sex": r.sex,
        "phone": local_phone(r.phone_e164),
        "address": address_text(r.address),
        "occupation": r.occupation,
        "programmes": columns.programmes,
        "declared_income": columns.declared_income_idr,
        "cover_start": when(r.cover_start),
        "funding_line": r.funding_line,
    }
    return [values.get(field, "") for _, field in columns.registration]
