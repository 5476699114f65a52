"""Rendering SMS text: templates as data, GSM-7 only, one part. Pure."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources

import yaml

from perlinsos_shared.events import EligibilityDecided

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
SINGLE_PART = 160
MONTHS_ID = ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des")


@lru_cache(maxsize=1)
def templates() -> dict[str, str]:
    text = resources.files("perlinsos_notify.templates").joinpath("sms_id.yaml").read_text("utf-8")
    loaded: dict[str, str] = yaml.safe_load(text)
    return loaded


def to_gsm7(text: str) -> str:
    """Transliterate to GSM-7 (Ngurah -> Ngurah, Dewi Ayu' -> Dewi Ayu'); drop the rest."""
    out = []
    for ch in text:
        if ch in GSM7_BASIC:
            out.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        out.append("".join(c for c in base if c in GSM7_BASIC))
    return "".join(out)


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC for ch in text)


def fmt_date(day: date | None) -> str:
    return f"{day.day} {MONTHS_ID[day.month - 1]} {day.year}" if day else "-"


@dataclass(frozen=True)
class Sms:
    template: str
    text: str


def template_for(d: EligibilityDecided) -> str:
    if d.outcome == "eligible":
        return "promoted" if d.promoted else "eligible"
    return d.outcome


def render(d: EligibilityDecided, brand: str, help_line: str) -> Sms:
    name = template_for(d)
    first = to_gsm7(d.first_name)[:20] or "Peserta"
    reason = to_gsm7(d.reasons[0].message) if d.reasons else "-"
    text = templates()[name].format(
        brand=brand,
        first_name=first,
        cover_start=fmt_date(d.cover_start),
        cover_end=fmt_date(d.cover_end),
        help_line=help_line,
        reason=reason,
    )
    text = to_gsm7(text)
    if len(text) > SINGLE_PART:  # shorten the free-text reason, never the facts
        overflow = len(text) - SINGLE_PART
        text = text.replace(reason, reason[: max(0, len(reason) - overflow - 3)] + "...", 1)
    return Sms(template=name, text=text[:SINGLE_PART])
