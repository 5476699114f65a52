"""Rendering SMS text: templates as data, GSM-7 only, one part. Pure: no I/O but the
package's own template file.

Indonesian operators do not reliably deliver UCS-2 or concatenated SMS, so every message
is GSM-7 (basic table only: extension characters like `[ ] { } ~ ^ | \\ €` count double
and some handsets mangle them) and at most 160 characters. Personal values are
transliterated (Ṡyahrül -> Syahrul), never allowed to switch the message to Unicode.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from perlinsos_shared.events import EligibilityDecided

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Plain ASCII is what every handset shows well; accented GSM-7 letters are fine too, but a
# name or reason is folded to ASCII where a close letter exists.
_PLAIN = frozenset(chr(c) for c in range(32, 127)) & GSM7_BASIC
SINGLE_PART = 160
MONTHS_ID = ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des")
TEMPLATE_NAMES = ("eligible", "promoted", "waitlisted", "ineligible", "exited")
_PUNCTUATION = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "`": "'",
        "´": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "–": "-",
        "—": "-",
        "‐": "-",
        "…": "...",
        "\u00a0": " ",
        "\t": " ",
        "\n": " ",
        "\r": " ",
        "[": "(",
        "]": ")",
        "{": "(",
        "}": ")",
        "~": "-",
        "|": "/",
        "\\": "/",
        "^": "",
        "€": "EUR",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "ı": "i",
    }
)


@dataclass(frozen=True)
class TemplateSet:
    templates: dict[str, str]
    first_name_limit: int
    reasons: dict[str, str]


@lru_cache(maxsize=1)
def template_set() -> TemplateSet:
    text = resources.files("perlinsos_notify.templates").joinpath("sms_id.yaml").read_text("utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    templates = {str(k): " ".join(str(v).split()) for k, v in loaded["templates"].items()}
    missing = set(TEMPLATE_NAMES) - set(templates)
    if missing:
        raise ValueError(f"sms_id.yaml lacks templates {sorted(missing)}")
    reasons = {str(k): " ".join(str(v).split()) for k, v in (loaded.get("reasons") or {}).items()}
    return TemplateSet(templates, int(loaded.get("limits", {}).get("first_name", 12)), reasons)


def templates() -> dict[str, str]:
    return template_set().templates


def to_gsm7(text: str) -> str:
    """Plain GSM-7 text: typographic punctuation folded, letters stripped of accents,
    anything without a GSM-7 form dropped, runs of spaces collapsed."""
    out: list[str] = []
    for ch in text.translate(_PUNCTUATION):
        if ch in _PLAIN:
            out.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        out.append("".join(c for c in base.translate(_PUNCTUATION) if c in _PLAIN))
    return " ".join("".join(out).split())


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC for ch in text)


def fmt_date(day: date | None) -> str:
    return f"{day.day} {MONTHS_ID[day.month - 1]} {day.year}" if day else "-"


def shorten(text: str, budget: int) -> str:
    """`text` cut to `budget` characters at a word boundary, with '...' when cut."""
    if len(text) <= budget:
        return text
    if budget <= 3:
        return "." * max(0, budget)
    cut = text[: budget - 3]
    if " " in cut and not text[budget - 3].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-") + "..."


def first_name_for_sms(first_name: str, limit: int) -> str:
    name = to_gsm7(first_name).strip(" '.-")
    if not name:
        return "Peserta"
    return name[:limit].rstrip(" '.-")


@dataclass(frozen=True)
class Sms:
    template: str
    text: str


def template_for(d: EligibilityDecided) -> str:
    if d.outcome == "eligible":
        return "promoted" if d.promoted else "eligible"
    return d.outcome


def render(d: EligibilityDecided, brand: str, help_line: str) -> Sms:
    """The one SMS for this decision: GSM-7, at most 160 characters."""
    ts = template_set()
    name = template_for(d)
    values = {
        "brand": to_gsm7(brand),
        "first_name": first_name_for_sms(d.first_name, ts.first_name_limit),
        "cover_start": fmt_date(d.cover_start),
        "cover_end": fmt_date(d.cover_end),
        "help_line": to_gsm7(help_line),
        "reason": "",
    }
    template = ts.templates[name]
    if "{reason}" in template:
        first = d.reasons[0] if d.reasons else None
        plain = (ts.reasons.get(first.code) or first.message) if first else ""
        reason = to_gsm7(plain).rstrip(" .")
        reason = reason or "syarat belum terpenuhi"
        fixed = len(template.format(**values))
        values["reason"] = shorten(reason, max(0, SINGLE_PART - fixed))
    text = template.format(**values).replace("....", "...")  # a shortened reason, then "."
    if len(text) > SINGLE_PART:  # a brand or help line longer than any test imagined
        text = shorten(text, SINGLE_PART)
    return Sms(template=name, text=text)
