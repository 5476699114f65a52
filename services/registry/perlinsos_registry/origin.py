"""Proof of origin: only the agency itself can speak for the agency.

Every intake event must carry the agency's signature (`perlinsos_shared.signing`) made
with a key registered for the agency it claims to be (`data.agency`, else `source`).
One that does not is refused with `SOURCE_UNVERIFIED` (`plan_intake`) before anything
else happens to it: no participant, no exit, and no claim on its (agency, request id),
so a forger cannot use up a request id the real agency will send later. The registered public keys
come from the file `PERLINSOS_AGENCY_KEYS` names (read again when it changes); without
it no submission can be proven, so none is accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from perlinsos_registry.reasons import reason
from perlinsos_registry.validation import agency_of_source, identity
from perlinsos_shared.consumer import Incoming, record_headers
from perlinsos_shared.events import Reason
from perlinsos_shared.signing import HEADER, KEYS_ENV, KeyRing, KeyRingFile

log = logging.getLogger("perlinsos.registry.origin")


def refusal(
    ring: KeyRing, agency: str | None, value: bytes, headers: dict[str, str]
) -> Reason | None:
    """`SOURCE_UNVERIFIED` unless `agency` signed exactly these bytes (pure)."""
    why = ring.verify(agency, headers.get(HEADER), value, headers)
    return None if why is None else reason("SOURCE_UNVERIFIED", None, why)


class Origin:
    """The registered agency keys, and the check each intake message goes through."""

    def __init__(self, ring_path: Path | None) -> None:
        if ring_path is None:
            log.warning("%s is not set: no intake submission can be proven", KEYS_ENV)
        self._file = KeyRingFile(ring_path)

    @classmethod
    def load(cls, path: Path | None = None) -> Origin:
        """From `path` (the setting `PERLINSOS_AGENCY_KEYS`) or the environment."""
        given = path or os.environ.get(KEYS_ENV)
        return cls(Path(given) if given else None)

    def check(self, m: Incoming) -> Reason | None:
        """Why `m` is not proven to come from the agency it names, or None."""
        agency = identity(m.envelope.data)[0] or agency_of_source(m.envelope.source)
        return refusal(self._file.ring(), agency, m.record.value or b"", record_headers(m.record))

    def verified(self, m: Incoming) -> bool:
        return self.check(m) is None
