"""Indonesian phone numbers: is this a mobile that can get an SMS, and its E.164 form.

One classification for the whole programme (registry refuses what is not a mobile at
intake; notify never sends to one), with phonenumbers (libphonenumber) deciding what
is valid and what is a mobile. Common spellings are accepted: `0812…`, `+62812…`,
`62 812-…`, `0062…`; letters are not (phonenumbers would read them as keypad digits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import PhoneNumberType

_SEPARATORS = re.compile(r"[\s\-.()/]")
_SHAPE = re.compile(r"^\+?\d+$")

PhoneKind = Literal["mobile", "invalid", "not_mobile", "foreign"]


@dataclass(frozen=True)
class PhoneCheck:
    kind: PhoneKind
    e164: str | None = None  # set for an Indonesian mobile

    @property
    def is_mobile(self) -> bool:
        return self.kind == "mobile"


def is_well_formed(raw: str) -> bool:
    """Only digits, common separators and a leading +: worth parsing at all."""
    return bool(_SHAPE.match(_SEPARATORS.sub("", raw.strip())))


def classify_phone(raw: str) -> PhoneCheck:
    """An Indonesian mobile in E.164, or what else the number is."""
    compact = _SEPARATORS.sub("", raw.strip())
    if not compact or not _SHAPE.match(compact):
        return PhoneCheck("invalid")
    if compact.startswith("0062"):
        compact = "+62" + compact[4:]
    elif compact.startswith("628"):  # a bare country code, not a 062x area code
        compact = "+" + compact
    national = (
        compact[3:] if compact.startswith("+62") else compact[1:] if compact[0] == "0" else ""
    )
    if national[:1] == "8" and national.isdigit():
        # the common shapes, built directly: what parse() would return, at a third of the cost
        number = phonenumbers.PhoneNumber(country_code=62, national_number=int(national))
    else:
        try:
            number = phonenumbers.parse(compact, "ID")
        except phonenumbers.NumberParseException:
            return PhoneCheck("invalid")
    kind = phonenumbers.number_type(number)  # UNKNOWN exactly when not a valid number
    if kind == PhoneNumberType.UNKNOWN:
        return PhoneCheck("invalid")
    if number.country_code != 62:
        return PhoneCheck("foreign")
    if kind != PhoneNumberType.MOBILE:
        return PhoneCheck("not_mobile")
    return PhoneCheck(
        "mobile", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    )
