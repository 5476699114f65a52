"""Proof of origin on values: what a signature covers and which keys it is checked against."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import orjson

from perlinsos_shared.intake_client import submission_event
from perlinsos_shared.signing import (
    HEADER,
    KeyRing,
    KeyRingFile,
    _b64,
    agency_keys,
    ensure_agency_keys,
    new_agency_key,
    sign_as_claimed,
    signing_key,
    write_key_ring,
)


def _ring(tmp_path: Path, *agencies: str) -> KeyRing:
    keys = tmp_path / "keys"
    ensure_agency_keys(keys, agencies)
    ring = tmp_path / "ring.json"
    write_key_ring(keys, ring)
    return KeyRing.from_json(ring.read_text())


def test_the_agency_own_signature_is_accepted(tmp_path: Path) -> None:
    ring = _ring(tmp_path, "DISHUB", "KELURAHAN")
    value = submission_event("DISHUB", {"agency": "DISHUB", "request_id": "r-1"})
    header = signing_key(tmp_path / "keys", "DISHUB").sign(value)
    assert ring.verify("DISHUB", header, value) is None


def test_libsodium_signs_as_openssl_does(tmp_path: Path) -> None:
    """The signature libsodium makes is the one `cryptography` (OpenSSL) makes with the
    same key: Ed25519 signatures are deterministic."""
    key = new_agency_key(tmp_path / "keys", "DISHUB")
    for value in (b"", b"x", submission_event("DISHUB", {"agency": "DISHUB"}), os.urandom(4096)):
        header = key.sign(value)
        assert header == f"keyid={key.key_id};sig={_b64(key.private.sign(value))}"


def test_a_changed_body_fails(tmp_path: Path) -> None:
    ring = _ring(tmp_path, "DISHUB")
    value = submission_event("DISHUB", {"agency": "DISHUB", "request_id": "r-1", "nik": "1"})
    header = signing_key(tmp_path / "keys", "DISHUB").sign(value)
    doc = orjson.loads(value)
    doc["data"]["nik"] = "2"
    assert ring.verify("DISHUB", header, orjson.dumps(doc)) == (
        "tanda tangan tidak cocok dengan isi pesan"
    )


def test_one_agency_cannot_sign_for_another(tmp_path: Path) -> None:
    ring = _ring(tmp_path, "DISHUB", "KELURAHAN")
    forged = submission_event("DISHUB", {"agency": "DISHUB", "request_id": "r-1"})
    header = signing_key(tmp_path / "keys", "KELURAHAN").sign(forged)
    why = ring.verify("DISHUB", header, forged)
    assert why is not None and "tidak terdaftar untuk DISHUB" in why


def test_unsigned_or_garbled_headers_fail(tmp_path: Path) -> None:
    ring = _ring(tmp_path, "DISHUB")
    value = submission_event("DISHUB", {"agency": "DISHUB"})
    for header in (None, "", "sig=abc", "keyid=x", "keyid=x;sig=!!!"):
        assert ring.verify("DISHUB", header, value) is not None
    assert ring.verify(None, "keyid=x;sig=abc", value) is not None


def test_keys_rotate_by_key_id(tmp_path: Path) -> None:
    keys, ring_path = tmp_path / "keys", tmp_path / "ring.json"
    old = new_agency_key(keys, "DISHUB")
    os.utime(keys / "DISHUB" / f"{old.key_id}.pem", (1, 1))  # made long ago
    new = new_agency_key(keys, "DISHUB")
    write_key_ring(keys, ring_path)
    ring = KeyRing.from_json(ring_path.read_text())
    value = submission_event("DISHUB", {"agency": "DISHUB"})
    assert ring.verify("DISHUB", old.sign(value), value) is None  # both registered
    assert ring.verify("DISHUB", new.sign(value), value) is None
    assert signing_key(keys, "DISHUB").key_id == new.key_id  # the newest signs
    (keys / "DISHUB" / f"{old.key_id}.pem").unlink()  # retired
    write_key_ring(keys, ring_path)
    ring = KeyRing.from_json(ring_path.read_text())
    assert ring.verify("DISHUB", old.sign(value), value) is not None


def test_binary_mode_headers_are_covered(tmp_path: Path) -> None:
    ring = _ring(tmp_path, "DISHUB")
    key = signing_key(tmp_path / "keys", "DISHUB")
    headers = {"ce_source": "agency/DISHUB", "ce_id": "1", "content-type": "application/json"}
    header = key.sign(b'{"nik": "1"}', headers)
    assert ring.verify("DISHUB", header, b'{"nik": "1"}', headers) is None
    forged = {**headers, "ce_source": "agency/KELURAHAN"}
    assert ring.verify("DISHUB", header, b'{"nik": "1"}', forged) is not None


def test_private_keys_are_owner_only_and_the_ring_holds_public_halves(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ensure_agency_keys(keys, ["DISHUB"])
    [key] = agency_keys(keys, "DISHUB")
    pem = keys / "DISHUB" / f"{key.key_id}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "DISHUB").stat().st_mode) == 0o700
    write_key_ring(keys, tmp_path / "ring.json")
    doc = json.loads((tmp_path / "ring.json").read_text())
    assert doc == {"DISHUB": {key.key_id: key.public_text}}
    assert "PRIVATE" not in (tmp_path / "ring.json").read_text()


def test_ring_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    keys, ring_path = tmp_path / "keys", tmp_path / "ring.json"
    ensure_agency_keys(keys, ["DISHUB"])
    write_key_ring(keys, ring_path)
    loaded = KeyRingFile(ring_path)
    assert set(loaded.ring().keys) == {"DISHUB"}
    ensure_agency_keys(keys, ["PERIKANAN"])
    write_key_ring(keys, ring_path)
    loaded._checked = 0.0  # skip the once-a-second pause
    assert set(loaded.ring().keys) == {"DISHUB", "PERIKANAN"}


def test_sign_as_claimed_signs_only_for_agencies_with_a_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ensure_agency_keys(keys, ["DISHUB"])
    ring = _ring(tmp_path, "DISHUB")
    value = submission_event("DISHUB", {"agency": "DISHUB"})
    header = sign_as_claimed(value, keys)
    assert header is not None and ring.verify("DISHUB", header, value) is None
    assert sign_as_claimed(submission_event("X", {"agency": "../DISHUB"}), keys) is None
    assert sign_as_claimed(b"not json", keys) is None
    assert HEADER == "perlinsos-signature"
