"""Masking personal data before it goes anywhere it does not belong (logs, spans, screens)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from perlinsos_shared.settings import get_settings

KEY_FILE = "pseudonym.key"


def mask_nik(nik: str) -> str:
    """First 6 and last 2 digits shown, as in `registry.intake-rejected.v1`."""
    if len(nik) <= 8:
        return "*" * len(nik)
    return nik[:6] + "*" * (len(nik) - 8) + nik[-2:]


def mask_phone(phone: str) -> str:
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


def pseudonym(value: str) -> str:
    """A stable short id of a NIK (or other personal value), for finding one person's rows
    without storing the value: HMAC-SHA-256 under the pseudonym key, 32 hex digits.

    Keyed, because a NIK has so little freedom (region, birth date, a 4-digit serial)
    that an unkeyed hash is reversed by trying every NIK in minutes."""
    return _digest(_keys(*_key_source())[0], value)


def pseudonyms(value: str) -> list[str]:
    """`value`'s pseudonym under the current key and every previous one (lookups after a
    rotation find rows written before it)."""
    return [_digest(key, value) for key in _keys(*_key_source())]


def _digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _key_source() -> tuple[str | None, str | None, Path]:
    settings = get_settings()
    current = settings.pseudonym_secret
    previous = settings.pseudonym_previous_secrets
    return (
        current.get_secret_value() if current else None,
        previous.get_secret_value() if previous else None,
        settings.state_dir,
    )


@lru_cache(maxsize=8)
def _keys(current: str | None, previous: str | None, state_dir: Path) -> list[bytes]:
    keys = [current.encode() if current else _state_dir_key(state_dir)]
    keys += [p.strip().encode() for p in (previous or "").split(",") if p.strip()]
    return keys


def _state_dir_key(state_dir: Path) -> bytes:
    """The embedded default: a random key made once in the state directory and kept
    (readable by its owner only). Several processes starting together agree: the first
    creates it, the others read it."""
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # another process may be between creating and writing it
        text = path.read_text().strip()
        if text:
            return text.encode()
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: delete it to make a new pseudonym key")


# Fields of the event contracts that hold personal data, and how each is shown masked.
_NAME_FIELDS = frozenset({"full_name", "first_name", "name", "mother_name"})
_WITHHELD_FIELDS = frozenset(
    {"birth_date", "address", "street", "rt", "rw", "driver_id", "kusuka_number", "sk_number"}
)


def mask_name(name: str) -> str:
    """Initials only: 'Budi Santoso' -> 'B*** S***'."""
    return " ".join(part[:1] + "***" for part in name.split()) or "***"


def mask_personal(value: Any, field: str = "") -> Any:
    """A copy of a decoded event (or any JSON value) with personal data masked: NIKs and
    phones partly, names to initials, dates of birth, addresses and document numbers
    withheld; a NIK- or phone-shaped run in any other text is masked too."""
    from perlinsos_shared.scrubbing import scrub

    if isinstance(value, dict):
        return {k: mask_personal(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_personal(v, field) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if field == "nik":
        return mask_nik(value)
    if field.startswith("phone"):
        return mask_phone(value)
    if field in _NAME_FIELDS:
        return mask_name(value)
    if field in _WITHHELD_FIELDS:
        return "(withheld)"
    return scrub(value)
