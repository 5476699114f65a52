"""Eligibility reason codes (stable, upper-case) with Indonesian explanations."""

from __future__ import annotations

from perlinsos_shared.events import DecisionReason

MESSAGES: dict[str, str] = {
    "DOMICILE_NOT_BATAM": "Alamat KTP (kecamatan dan kelurahan) tidak berada di Kota Batam",
    "AGE_OUT_OF_RANGE": "Usia pada tanggal mulai perlindungan di luar batas program (di bawah 65 tahun)",
    "ALREADY_BPJS_MEMBER": "Sudah terdaftar sebagai peserta BPJS Ketenagakerjaan",
    "OCCUPATION_NOT_COVERED": "Pekerjaan/peran tidak termasuk dalam program",
    "QUOTA_FULL": "Kuota program tahun ini sudah penuh; Anda masuk daftar tunggu sesuai urutan pendaftaran",
    "OUTSIDE_FUNDING_WINDOW": "Bulan ini di luar periode pendanaan program; Anda masuk daftar tunggu sampai bulan yang didanai",
}


def reason(code: str) -> DecisionReason:
    return DecisionReason(code=code, message=MESSAGES[code])
