"""Kota Batam's kecamatan and kelurahan, and tolerant matching of place names.

The list lives in ``perlinsos_shared/data/batam_wilayah.json`` (read once, cached) so the
city can correct it without a code change. Names and codes follow Kepmendagri
300.2.2-2138/2025 where they have been checked against it (the file says which); other
spellings in common use (``Pulau Terong`` for the official ``Pulau Terung``) are kept per
kecamatan as ``aliases`` and match the official name. The file stays
``"verified": false`` until every kelurahan has been compared with the decree's annex.

Matching is tolerant of the spellings people and agency systems actually use: case,
punctuation and extra spaces; ``Sei``/``Sei.``/``Sungai``; ``Tj``/``Tj.``/``Tg``/``Tanjung``;
``P.``/``Pulau``; ``Kp.``/``Kampung``; leading ``Kel.``/``Kelurahan``/``Kec.``/``Kecamatan``;
and words run together (``Tanjungpiayu``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "Kecamatan",
    "batam_kecamatan",
    "find_kecamatan",
    "find_kelurahan",
    "is_batam_address",
    "normalise_place",
    "wilayah_source",
]

_DATA_PACKAGE = "perlinsos_shared"
_DATA_FILE = "batam_wilayah.json"

_NON_WORD = re.compile(r"[\W_]+")
# Abbreviations mapped to the full word (after casefolding and stripping punctuation).
_SYNONYMS: dict[str, str] = {
    "sei": "sungai",
    "sg": "sungai",
    "sgi": "sungai",
    "tj": "tanjung",
    "tg": "tanjung",
    "tjg": "tanjung",
    "tanjong": "tanjung",
    "p": "pulau",
    "pl": "pulau",
    "kp": "kampung",
    "kpg": "kampung",
    "kampong": "kampung",
}
# Administrative words dropped when they lead the name.
_PREFIXES = frozenset({"kel", "kelurahan", "kec", "kecamatan"})


@dataclass(frozen=True)
class Kecamatan:
    """A kecamatan of Kota Batam: Kemendagri code without dots (``"217107"``), the
    published name and its kelurahan, as the data file spells them."""

    code: str
    name: str
    kelurahan: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()  # (other spelling, official name)


def normalise_place(name: str) -> str:
    """A comparison key for a kecamatan or kelurahan name.

    >>> normalise_place("Kel.  SEI  Beduk")
    'sungai beduk'
    >>> normalise_place("Tj.Piayu")
    'tanjung piayu'
    """
    tokens = _NON_WORD.sub(" ", name.casefold()).split()
    while len(tokens) > 1 and tokens[0] in _PREFIXES:
        tokens = tokens[1:]
    return " ".join(_SYNONYMS.get(token, token) for token in tokens)


def _key(name: str) -> str:
    """The normalised name with spaces removed, so ``Tanjungpiayu`` meets ``Tj. Piayu``."""
    return normalise_place(name).replace(" ", "")


@cache
def _document() -> dict[str, Any]:
    text = resources.files(_DATA_PACKAGE).joinpath("data").joinpath(_DATA_FILE).read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def batam_kecamatan() -> tuple[Kecamatan, ...]:
    """Kota Batam's kecamatan in code order, from the packaged data file."""
    return tuple(
        sorted(
            (
                Kecamatan(
                    code=str(entry["code"]),
                    name=str(entry["name"]),
                    kelurahan=tuple(str(k) for k in entry["kelurahan"]),
                    aliases=tuple(
                        (str(a), str(n)) for a, n in (entry.get("aliases") or {}).items()
                    ),
                )
                for entry in _document()["kecamatan"]
            ),
            key=lambda k: k.code,
        )
    )


def wilayah_source() -> tuple[str, bool]:
    """Where the list comes from and whether it has been verified."""
    document = _document()
    return str(document.get("source", "")), bool(document.get("verified", False))


@cache
def _kecamatan_index() -> dict[str, Kecamatan]:
    index: dict[str, Kecamatan] = {}
    for kecamatan in batam_kecamatan():
        index[_key(kecamatan.name)] = kecamatan
        index[kecamatan.code] = kecamatan
    return index


@cache
def _kelurahan_index() -> dict[str, dict[str, str]]:
    """Kecamatan code → (kelurahan key → official kelurahan name), aliases included."""
    index: dict[str, dict[str, str]] = {}
    for kecamatan in batam_kecamatan():
        names = {_key(name): name for name in kecamatan.kelurahan}
        for alias, official in kecamatan.aliases:
            if official not in kecamatan.kelurahan:
                raise ValueError(f"alias {alias!r} points at unknown kelurahan {official!r}")
            names.setdefault(_key(alias), official)
        index[kecamatan.code] = names
    return index


def find_kecamatan(name: str) -> Kecamatan | None:
    """The Batam kecamatan a name (any common spelling) or code (``217107``,
    ``21.71.07``) refers to, or ``None``."""
    if not name or not name.strip():
        return None
    index = _kecamatan_index()
    digits = re.sub(r"[\s.\-]", "", name)
    if digits.isdigit():
        return index.get(digits) if len(digits) == 6 else None
    return index.get(_key(name))


def find_kelurahan(kecamatan: str, kelurahan: str) -> tuple[Kecamatan, str] | None:
    """The Batam kecamatan and the canonical kelurahan name, when ``kelurahan`` lies in
    ``kecamatan`` (both in any common spelling); else ``None``."""
    found = find_kecamatan(kecamatan)
    if found is None or not kelurahan or not kelurahan.strip():
        return None
    canonical = _kelurahan_index()[found.code].get(_key(kelurahan))
    return None if canonical is None else (found, canonical)


def is_batam_address(kecamatan: str, kelurahan: str) -> bool:
    """Whether the kelurahan is one of Kota Batam's and belongs to that kecamatan."""
    return find_kelurahan(kecamatan, kelurahan) is not None
