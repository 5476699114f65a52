"""Rendering SMS text: templates as data, GSM-7 only, one part. Pure: no I/O but the
package's own template file.

Indonesian operators do not reliably deliver UCS-2 or concatenated SMS, so every message
is GSM-7 (basic table only: extension characters like `[ ] { } ~ ^ | \\ €` count double
and some handsets mangle them) and at most 160 characters. Personal values are
transliterated (Ṡyahrül -> Syahrul), never allowed to switch the message to Unicode.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from perlinsos_shared.events import DecisionReason, EligibilityDecided, ExitReason

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Plain ASCII is what every handset shows well; accented GSM-7 letters are fine too, but a
# name or reason is folded to ASCII where a close letter exists.
_PLAIN = frozenset(chr(c) for c in range(32, 127)) & GSM7_BASIC
SINGLE_PART = 160
MONTHS_ID = ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des")
TEMPLATE_NAMES = ("eligible", "promoted", "waitlisted", "ineligible", "exited", "deceased")
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


class TemplateError(ValueError):
    """Template data or settings that cannot give a one-part GSM-7 SMS (refused at start)."""


@dataclass(frozen=True)
class Names:
    """How people are addressed: a salutation from the KTP sex and the first word of the
    full name that is a name (initials and titles skipped, as data)."""

    salutations: dict[str, str]  # "L" -> "Bapak", "P" -> "Ibu", "" -> "Bapak/Ibu"
    skip: tuple[tuple[str, ...], ...]  # titles, longest first, casefolded, without dots
    # the first words of `skip`: most words start no title, and need no look at `skip`
    starts: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", frozenset(p[0] for p in self.skip if p))


@dataclass(frozen=True)
class TemplateSet:
    templates: dict[str, str]  # an empty text: no SMS for that decision
    first_name_limit: int
    reasons: dict[str, tuple[str, ...]]  # tried in order: the first whose values are known
    names: Names
    reason_room: int  # characters a refusal reason gets at least (checked at start)


def _texts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(" ".join(str(v).split()) for v in items)


def _names(raw: dict[str, Any]) -> Names:
    salutations = {str(k): str(v) for k, v in (raw.get("salutations") or {}).items()}
    for key in ("L", "P", "unknown"):
        if not salutations.get(key):
            raise TemplateError(f"sms_id.yaml: names.salutations lacks {key}")
    phrases = {
        tuple(w.rstrip(".").casefold() for w in str(title).split())
        for title in raw.get("skip") or []
    }
    return Names(salutations, tuple(sorted(phrases, key=len, reverse=True)))


@lru_cache(maxsize=1)
def template_set() -> TemplateSet:
    text = resources.files("perlinsos_notify.templates").joinpath("sms_id.yaml").read_text("utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    templates = {str(k): " ".join(str(v or "").split()) for k, v in loaded["templates"].items()}
    missing = set(TEMPLATE_NAMES) - set(templates)
    if missing:
        raise TemplateError(f"sms_id.yaml lacks templates {sorted(missing)}")
    reasons = {str(k): _texts(v) for k, v in (loaded.get("reasons") or {}).items()}
    limits = loaded.get("limits") or {}
    return TemplateSet(
        templates,
        int(limits.get("first_name", 12)),
        reasons,
        _names(loaded.get("names") or {}),
        int(limits.get("reason_room", 30)),
    )


def templates() -> dict[str, str]:
    return template_set().templates


def to_gsm7(text: str) -> str:
    """Plain GSM-7 text: typographic punctuation folded, letters stripped of accents,
    anything without a GSM-7 form dropped, runs of spaces collapsed."""
    text = text.translate(_PUNCTUATION)
    if _PLAIN.issuperset(text):  # the usual case: nothing to fold or drop
        return " ".join(text.split())
    out: list[str] = []
    for ch in text:
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


_NAME_TOKEN = re.compile(r"[^\s.,]+\.?")


def name_word(full_name: str, names: Names) -> str | None:
    """The first word of `full_name` that is a name: initials ("M.", "A") and titles
    ("Hj.", "Ni Luh", "Ir.") skipped, as the data lists them; None when none is left.

    "H.Abdul" and "M.Syahrul" are read as two words; a name written in capitals (as on
    the KTP) is put in title case.
    """
    tokens: list[str] = _NAME_TOKEN.findall(to_gsm7(full_name))
    keys = [t.rstrip(".").casefold() for t in tokens]
    i = 0
    while i < len(tokens):
        skipped = 0
        if keys[i] in names.starts:
            skipped = next(
                (len(p) for p in names.skip if tuple(keys[i : i + len(p)]) == p),
                0,
            )
        if skipped:
            i += skipped
            continue
        word = tokens[i].rstrip(".'-")
        if len(keys[i]) <= 1 or not any(c.isalpha() for c in word):
            i += 1  # an initial, or no letters at all
            continue
        return word.capitalize() if word.isupper() or word.islower() else word
    return None


def greeting(full_name: str | None, first_name: str, sex: str | None, ts: TemplateSet) -> str:
    """`Bapak Syahrul`, `Ibu Siti`; "Bapak" or "Ibu" alone when no word is a name;
    "Bapak/Ibu" when the sex is not known (decisions made before it was carried)."""
    return _greeting(name_word(full_name or first_name, ts.names), sex, ts)


def _greeting(word: str | None, sex: str | None, ts: TemplateSet) -> str:
    """`greeting` from the name word already picked."""
    salutation = ts.names.salutations.get(sex or "", ts.names.salutations["unknown"])
    if not word:
        return salutation
    return salutation + " " + word[: ts.first_name_limit].rstrip(" '.-")


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
    if d.outcome == "exited" and d.exit_reason == ExitReason.DECEASED:
        return "deceased"
    return d.outcome


def _param_text(value: str | int) -> str:
    """A month `2027-01` as "Jan 2027", a date as "30 Sep 2025", anything else as is."""
    text = str(value)
    if _MONTH.match(text):
        return f"{MONTHS_ID[int(text[5:7]) - 1]} {text[:4]}"
    if _DAY.match(text):
        return fmt_date(date.fromisoformat(text))
    return text


_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def reason_text(first: DecisionReason | None, ts: TemplateSet) -> str:
    """The first reason in plain words: the first of its texts whose values the decision
    carries, else eligibility's own message."""
    if first is None:
        return ""
    values = {k: _param_text(v) for k, v in first.params.items()}
    for candidate in ts.reasons.get(first.code, ()):
        try:
            return candidate.format(**values)
        except (KeyError, IndexError):
            continue
    return first.message


@lru_cache(maxsize=16)
def _setting_text(text: str) -> str:
    """A brand or help line (settings: a handful per process) as GSM-7, once."""
    return to_gsm7(text)


def _values(
    brand: str, help_line: str, greet: str, first_name: str, start: str, end: str
) -> dict[str, str]:
    return {
        "brand": _setting_text(brand),
        "greeting": greet,
        "first_name": first_name,
        "cover_start": start,
        "cover_end": end,
        "help_line": _setting_text(help_line),
        "reason": "",
    }


def render(d: EligibilityDecided, brand: str, help_line: str) -> Sms | None:
    """The one SMS for this decision (GSM-7, at most 160 characters), or None when the
    template data says to send nothing for it (an empty template)."""
    ts = template_set()
    name = template_for(d)
    template = ts.templates[name]
    if not template:
        return None
    word = name_word(d.full_name or d.first_name, ts.names)
    greet = _greeting(word, d.sex, ts)
    values = _values(
        brand,
        help_line,
        greet,
        first_name_for_sms(word or greet, ts.first_name_limit),
        fmt_date(d.cover_start),
        fmt_date(d.cover_end),
    )
    if "{reason}" in template:
        first = d.reasons[0] if d.reasons else None
        reason = to_gsm7(reason_text(first, ts)).rstrip(" .")
        reason = reason or "syarat belum terpenuhi"
        fixed = len(template.format(**values))
        values["reason"] = shorten(reason, max(0, SINGLE_PART - fixed))
    text = template.format(**values).replace("....", "...")  # a shortened reason, then "."
    if len(text) > SINGLE_PART:  # cannot happen once `check_fits` passed at start-up
        text = shorten(text, SINGLE_PART)
    return Sms(template=name, text=text)


def check_fits(brand: str, help_line: str) -> None:
    """Refuse (at start-up) a brand or help line that would not leave every template one
    GSM-7 part with the longest name, the longest date and room for a reason: better than
    cutting the help number off a message."""
    ts = template_set()
    longest_greeting = (
        max(ts.names.salutations.values(), key=len) + " " + "W" * (ts.first_name_limit)
    )
    values = _values(
        brand,
        help_line,
        longest_greeting,
        "W" * ts.first_name_limit,
        "30 Sep 2025",
        "30 Sep 2025",
    )
    problems = []
    for name, template in sorted(ts.templates.items()):
        if not template:
            continue
        try:
            length = len(template.format(**values))
        except (KeyError, IndexError) as exc:
            raise TemplateError(f"template {name}: unknown placeholder {exc}") from exc
        if "{reason}" in template:
            length += ts.reason_room
        if length > SINGLE_PART:
            problems.append(f"{name} needs {length} characters")
    if problems:
        raise TemplateError(
            f"SMS_BRAND ({len(values['brand'])} characters) and SMS_HELP_LINE "
            f"({len(values['help_line'])}) leave no room for a one-part SMS: "
            + "; ".join(problems)
            + f" (at most {SINGLE_PART})"
        )
