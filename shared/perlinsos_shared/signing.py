"""Proof of origin for intake: each agency signs every event with its own Ed25519 key.

The signature travels in the Kafka header `perlinsos-signature: keyid=<id>;sig=<base64url>`
and covers the whole message value (the structured CloudEvent: `source`, `id`, `type`
and `data` together), plus, for a binary-mode event, its `ce_*` and `content-type`
headers. A signature copied onto a changed body, or onto another agency's `source`,
fails; the same bytes replayed carry the same event id, which the inbox already drops.

Ed25519 rather than a shared HMAC secret: registry holds only public keys, so neither
registry nor anyone who reads its configuration can speak for an agency. Keys rotate by
key id: an agency may have several registered at once (the new one added, signing moved
to it, the old one removed).

Keys are made and stored with `cryptography` (PKCS#8 files); messages are signed and
signatures checked with libsodium (PyNaCl): a check costs about 60 µs of CPU a message
against 113 µs through OpenSSL, a signature about 30 µs against 54 (Ed25519 signatures
are deterministic: the same key and bytes give the same signature through either), and
it lets go of the GIL while it checks, so a batch can be checked on every core at once
(`KeyRing.verify_many`). libsodium is the stricter of the two (it also
refuses small-order points and non-canonical encodings, which no honest signer makes).

On disk (made by `perlinsos up` and the cohort run for the demo agencies, or by
`python -m perlinsos_shared.signing new-key AGENCY` for a real one):
- the agency's private key, `<keys>/<AGENCY>/<keyid>.pem` (PKCS#8, mode 0600), which
  never leaves the agency;
- the registered public keys, one JSON file `{agency: {keyid: base64 raw key}}`, which
  registry reads (`PERLINSOS_AGENCY_KEYS`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

HEADER = "perlinsos-signature"
KEYS_ENV = "PERLINSOS_AGENCY_KEYS"
# What `KeyRing.verify` checks: the agency claimed, the signature header, the value, the
# message's headers (binary mode: its `ce_*` attributes are signed too)
Check = tuple[str | None, str | None, bytes, Mapping[str, str] | None]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_input(value: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes a signature covers: the value; in binary mode also the event's headers."""
    ce = sorted(
        (k, v) for k, v in (headers or {}).items() if k.startswith("ce_") or k == "content-type"
    )
    if not any(k.startswith("ce_") for k, _ in ce):
        return value
    return b"".join(f"{k}={v}\n".encode() for k, v in ce) + b"\n" + value


def parse_header(text: str | None) -> tuple[str, bytes] | None:
    """(key id, signature) from `keyid=...;sig=...`, or None when it is not that."""
    if not text:
        return None
    parts = dict(p.strip().partition("=")[::2] for p in text.split(";") if "=" in p)
    key_id, sig = parts.get("keyid"), parts.get("sig")
    if not key_id or not sig:
        return None
    try:
        return key_id, _unb64(sig)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class AgencyKey:
    """An agency's signing key (the private half; it stays with the agency)."""

    agency: str
    key_id: str
    private: Ed25519PrivateKey

    def sign(self, value: bytes, headers: Mapping[str, str] | None = None) -> str:
        """The `perlinsos-signature` header value for this message."""
        sig = self._signer.sign(signing_input(value, headers)).signature
        return f"keyid={self.key_id};sig={_b64(sig)}"

    @cached_property
    def _signer(self) -> SigningKey:
        """The same key for libsodium (its 32-byte seed), made at the first signature."""
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return SigningKey(seed)

    @property
    def public_text(self) -> str:
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64(raw)


@dataclass
class KeyRing:
    """The public keys registered per agency, several per agency while one rotates."""

    keys: dict[str, dict[str, VerifyKey]] = field(default_factory=dict)

    def verify(
        self,
        agency: str | None,
        header: str | None,
        value: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str | None:
        """None when `agency` signed this message; otherwise why not (safe to tell them)."""
        if not agency:
            return "tidak ada instansi pengirim"
        parsed = parse_header(header)
        if parsed is None:
            return f"tanpa tanda tangan ({HEADER})"
        key_id, sig = parsed
        key = self.keys.get(agency, {}).get(key_id)
        if key is None:
            return f"kunci {key_id[:40]!r} tidak terdaftar untuk {agency[:64]}"
        try:
            key.verify(signing_input(value, headers), sig)
        except (BadSignatureError, ValueError, TypeError):  # forged, or not 64 bytes
            return "tanda tangan tidak cocok dengan isi pesan"
        return None

    def verify_many(self, checks: Sequence[Check]) -> list[str | None]:
        """`verify` of each (agency, header, value, headers), in order."""
        return [self.verify(*check) for check in checks]

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        doc = json.loads(text)
        return cls(
            {
                agency: {kid: VerifyKey(_unb64(pub)) for kid, pub in keys.items()}
                for agency, keys in doc.items()
            }
        )


class KeyRingFile:
    """A key ring read from its file, read again when the file changes (rotation without
    a restart); checked at most once a second."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._ring = KeyRing()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0

    def ring(self) -> KeyRing:
        if self.path is None:
            return self._ring
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                self._ring = KeyRing.from_json(self.path.read_text(encoding="utf-8"))
                self._stamp = stamp
        return self._ring


# --- keys on disk -----------------------------------------------------------------------

_process_keys_dir: Path | None = None


def agency_keys_dir(state_dir: Path) -> Path:
    """Where a state directory keeps its demo agencies' private keys (owner-only)."""
    return Path(state_dir) / "secrets" / "agency-keys"


def use_keys_dir(path: Path) -> None:
    """The keys an agency client in this process signs with unless told otherwise (set
    by the stack that made them)."""
    global _process_keys_dir
    _process_keys_dir = Path(path)


def default_keys_dir() -> Path:
    from perlinsos_shared.settings import get_settings

    return _process_keys_dir or agency_keys_dir(get_settings().state_dir)


def new_agency_key(keys_dir: Path, agency: str) -> AgencyKey:
    """Make a new key for `agency` (a new key id), written owner-only."""
    key_id = f"{agency.lower()}-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    private = Ed25519PrivateKey.generate()
    Path(keys_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(keys_dir) / agency
    folder.mkdir(exist_ok=True, mode=0o700)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(folder / f"{key_id}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return AgencyKey(agency, key_id, private)


def agency_keys(keys_dir: Path, agency: str) -> list[AgencyKey]:
    """Every key of `agency` on disk, newest first (the first one signs)."""
    folder = Path(keys_dir) / agency
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    out = []
    for path in files:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            continue
        out.append(AgencyKey(agency, path.stem, private))
    return out


def signing_key(keys_dir: Path, agency: str) -> AgencyKey:
    """The key `agency` signs with now (its newest)."""
    found = agency_keys(keys_dir, agency)
    if not found:
        raise LookupError(f"no signing key for agency {agency} under {keys_dir}")
    return found[0]


def write_key_ring(keys_dir: Path, ring_path: Path) -> dict[str, list[str]]:
    """Register every agency key found under `keys_dir` (public halves) in `ring_path`."""
    doc: dict[str, dict[str, str]] = {}
    keys_dir = Path(keys_dir)
    if keys_dir.is_dir():
        for folder in sorted(p for p in keys_dir.iterdir() if p.is_dir()):
            doc[folder.name] = {k.key_id: k.public_text for k in agency_keys(keys_dir, folder.name)}
    tmp = ring_path.with_name(f".{ring_path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(ring_path)
    return {agency: sorted(keys) for agency, keys in doc.items()}


def ensure_agency_keys(keys_dir: Path, agencies: Iterable[str]) -> dict[str, AgencyKey]:
    """A signing key for each agency, made if it has none yet."""
    return {a: (agency_keys(keys_dir, a) or [new_agency_key(keys_dir, a)])[0] for a in agencies}


def claimed_agency(value: bytes) -> str | None:
    """The agency a structured event says it comes from (`data.agency`, else `source`)."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    data = doc.get("data")
    agency = data.get("agency") if isinstance(data, dict) else None
    source = doc.get("source")
    if not isinstance(agency, str) and isinstance(source, str) and source.startswith("agency/"):
        agency = source.removeprefix("agency/")
    return agency if isinstance(agency, str) and agency else None


def sign_as_claimed(value: bytes, keys_dir: Path | None = None) -> str | None:
    """A signature header for a ready-made event, by the agency it claims to come from,
    when that agency has a key under `keys_dir` (else None: sent unsigned)."""
    agency = claimed_agency(value)
    if agency is None or "/" in agency or agency.startswith("."):
        return None
    found = agency_keys(keys_dir or default_keys_dir(), agency)
    return found[0].sign(value) if found else None


def main(argv: list[str] | None = None) -> None:
    """`python -m perlinsos_shared.signing new-key AGENCY KEYS_DIR [RING.json]`: a new key
    for the agency (rotation: the old ones stay registered until removed)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "new-key":
        raise SystemExit("usage: python -m perlinsos_shared.signing new-key AGENCY KEYS_DIR [RING]")
    key = new_agency_key(Path(args[2]), args[1].upper())
    print(f"{key.agency} {key.key_id} {key.public_text}")
    if len(args) > 3:
        write_key_ring(Path(args[2]), Path(args[3]))


if __name__ == "__main__":
    main()
