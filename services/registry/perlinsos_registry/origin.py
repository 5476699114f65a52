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

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from perlinsos_registry.reasons import reason
from perlinsos_registry.validation import agency_of_source, identity
from perlinsos_shared.consumer import Incoming, record_headers
from perlinsos_shared.events import Reason
from perlinsos_shared.signing import HEADER, KEYS_ENV, Check, KeyRing, KeyRingFile

log = logging.getLogger("perlinsos.registry.origin")

# A batch's signatures are checked in this many threads at once: libsodium lets go of the
# GIL while it checks, so on 2 cores a batch takes about half the time, and the event
# loop (the outbox relay, the other consumer) runs meanwhile. A small batch is checked in
# place: handing a part to a thread and back costs more than a few checks.
CHECK_THREADS = 2
CHECKS_IN_PLACE = 64


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
        self._threads = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="origin-check")

    @classmethod
    def load(cls, path: Path | None = None) -> Origin:
        """From `path` (the setting `PERLINSOS_AGENCY_KEYS`) or the environment."""
        given = path or os.environ.get(KEYS_ENV)
        return cls(Path(given) if given else None)

    def check(self, m: Incoming) -> Reason | None:
        """Why `m` is not proven to come from the agency it names, or None."""
        agency, _, value, headers = _check_of(m)
        return refusal(self._file.ring(), agency, value, dict(headers or {}))

    def verified(self, m: Incoming) -> bool:
        return self.check(m) is None

    async def verified_all(self, messages: Sequence[Incoming]) -> list[bool]:
        """`verified` of each message, the batch's checks spread over `CHECK_THREADS`."""
        ring = self._file.ring()
        checks = [_check_of(m) for m in messages]
        if len(checks) <= CHECKS_IN_PLACE:
            return [why is None for why in ring.verify_many(checks)]
        loop = asyncio.get_running_loop()
        size = -(-len(checks) // CHECK_THREADS)
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._threads, ring.verify_many, checks[i : i + size])
                for i in range(0, len(checks), size)
            )
        )
        return [why is None for part in parts for why in part]


def _check_of(m: Incoming) -> Check:
    """What proves `m`'s origin: the agency it names (`data.agency`, else its `source`),
    its signature header, its value and headers."""
    agency = identity(m.envelope.data)[0] or agency_of_source(m.envelope.source)
    headers = record_headers(m.record)
    return agency, headers.get(HEADER), m.record.value or b"", headers
