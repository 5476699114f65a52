"""Eligibility reason codes (stable, upper-case) with Indonesian explanations.

A message may name values of the rule that failed (`{min_age}`, `{year}` ...): they come
from the rule data as `params` and travel on the decision, so notify can word its SMS from
the same values. A message whose params are missing falls back to its plain form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from perlinsos_shared.events import DecisionReason

# Every code eligibility can give: a typo in a `reason(...)` call fails the type check.
DecisionCode = Literal[
    "DOMICILE_NOT_BATAM",
    "AGE_OUT_OF_RANGE",
    "ALREADY_BPJS_MEMBER",
    "OCCUPATION_NOT_COVERED",
    "QUOTA_FULL",
    "OUTSIDE_FUNDING_WINDOW",
]

MESSAGES: dict[DecisionCode, str] = {
    "DOMICILE_NOT_BATAM": "Alamat KTP (kecamatan dan kelurahan) tidak berada di Kota Batam",
    "AGE_OUT_OF_RANGE": "Usia pada tanggal mulai perlindungan harus {min_age} tahun sampai "
    "di bawah {max_age} tahun; usia Anda {age} tahun",
    "ALREADY_BPJS_MEMBER": "Sudah terdaftar sebagai peserta BPJS Ketenagakerjaan",
    "OCCUPATION_NOT_COVERED": "Pekerjaan/peran tidak termasuk dalam program",
    "QUOTA_FULL": "Kuota program tahun {year} ({quota} orang) sudah penuh; Anda belum "
    "terlindungi dan masuk daftar tunggu sesuai urutan pendaftaran",
    "OUTSIDE_FUNDING_WINDOW": "Program belum didanai bulan ini; bulan didanai berikutnya "
    "{next_month}. Anda belum terlindungi dan masuk daftar tunggu",
}
PLAIN: dict[DecisionCode, str] = {
    "AGE_OUT_OF_RANGE": "Usia pada tanggal mulai perlindungan di luar batas program",
    "QUOTA_FULL": "Kuota program tahun ini sudah penuh; Anda belum terlindungi dan masuk "
    "daftar tunggu sesuai urutan pendaftaran",
    "OUTSIDE_FUNDING_WINDOW": "Program belum didanai bulan ini dan belum ada bulan didanai "
    "berikutnya. Anda belum terlindungi dan masuk daftar tunggu",
}


def reason(code: DecisionCode, params: Mapping[str, str | int] | None = None) -> DecisionReason:
    values = dict(params or {})
    try:
        message = MESSAGES[code].format(**values)
    except KeyError:
        message = PLAIN.get(code, MESSAGES[code])
    return DecisionReason(code=code, message=message, params=values)
