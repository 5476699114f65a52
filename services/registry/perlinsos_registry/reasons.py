"""Intake reason codes: stable identifiers agencies program against, Indonesian messages.

The codes are part of the public contract of `registry.intake-rejected.v1`: never rename
one; a new problem gets a new code.
"""

from __future__ import annotations

from typing import Literal

from perlinsos_shared.events import Reason

# Every code registry can give: a typo in a `reason(...)` call fails the type check.
IntakeCode = Literal[
    "SCHEMA_INVALID",
    "NIK_INVALID",
    "BIRTH_DATE_MISMATCH",
    "SEX_MISMATCH",
    "PHONE_INVALID",
    "PHONE_NOT_MOBILE",
    "ADDRESS_INCOMPLETE",
    "EVIDENCE_MISSING",
    "AGENCY_NOT_ALLOWED",
    "DUPLICATE_NIK",
    "UNKNOWN_NIK",
    "EXIT_BEFORE_ENROLMENT",
    "ALREADY_EXITED",
    "UNKNOWN_EVENT_TYPE",
    "SOURCE_UNVERIFIED",
]

MESSAGES: dict[IntakeCode, str] = {
    "SCHEMA_INVALID": "Format pesan tidak sesuai kontrak intake",
    "NIK_INVALID": "NIK tidak valid (harus 16 digit dengan kode wilayah dan tanggal lahir yang sah)",
    "BIRTH_DATE_MISMATCH": "Tanggal lahir tidak sesuai dengan NIK",
    "SEX_MISMATCH": "Jenis kelamin tidak sesuai dengan NIK",
    "PHONE_INVALID": "Nomor telepon tidak valid",
    "PHONE_NOT_MOBILE": "Nomor telepon bukan nomor seluler Indonesia; SMS tidak dapat dikirim",
    "ADDRESS_INCOMPLETE": "Alamat KTP belum lengkap (kecamatan, kelurahan, RT dan RW wajib diisi)",
    "EVIDENCE_MISSING": "Bukti pekerjaan/peran belum dilampirkan",
    "AGENCY_NOT_ALLOWED": "Instansi ini tidak berwenang mendaftarkan pekerjaan tersebut",
    "DUPLICATE_NIK": "NIK sudah terdaftar sebagai peserta",
    "UNKNOWN_NIK": "NIK tidak terdaftar sebagai peserta",
    "EXIT_BEFORE_ENROLMENT": "Tanggal keluar lebih awal dari tanggal pendaftaran",
    "ALREADY_EXITED": "Peserta sudah tercatat keluar",
    "UNKNOWN_EVENT_TYPE": "Jenis event tidak dikenal untuk topik intake",
    "SOURCE_UNVERIFIED": "Asal pesan tidak dapat dibuktikan sebagai instansi pengirim",
}


def reason(code: IntakeCode, field: str | None = None, detail: str | None = None) -> Reason:
    message = MESSAGES[code]
    if detail:
        message = f"{message}: {detail}"
    return Reason(code=code, field=field, message=message)
