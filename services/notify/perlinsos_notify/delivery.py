"""Delivery rules, pure: who can get an SMS, what a provider answer means, when to retry.

No I/O here: the sender and reconciler (sender.py, reconciler.py) apply these to database rows and provider
answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from perlinsos_shared.phones import classify_phone

# Reason codes: stable, upper-case English like every code in the contracts (the words
# people read stay Indonesian). A typo in a use fails the type check.
DeliveryCode = Literal[
    "PHONE_INVALID", "PHONE_NOT_MOBILE", "PHONE_NOT_INDONESIAN", "PROVIDER_REFUSED",
    "RETRIES_EXHAUSTED",
]  # fmt: skip
PHONE_INVALID: DeliveryCode = "PHONE_INVALID"  # not a valid phone number at all
PHONE_NOT_MOBILE: DeliveryCode = "PHONE_NOT_MOBILE"  # a landline or other non-mobile number
PHONE_NOT_INDONESIAN: DeliveryCode = "PHONE_NOT_INDONESIAN"  # not an Indonesian (+62) number
PROVIDER_REFUSED: DeliveryCode = "PROVIDER_REFUSED"  # the provider refused it for good (4xx)
RETRIES_EXHAUSTED: DeliveryCode = (
    "RETRIES_EXHAUSTED"  # retried for the whole horizon (429 / 5xx / timeouts)
)


def undeliverable_reason(phone_e164: str) -> DeliveryCode | None:
    """None when an SMS can go to this number; else why not (a reason code).

    Only Indonesian mobiles get SMS: a Batam landline (+62 778 ...) cannot receive one,
    and the registry's own filtering is not trusted here.
    """
    if not phone_e164.startswith("+") or not phone_e164[1:].isdigit():
        return PHONE_INVALID
    kind = classify_phone(phone_e164).kind
    return {
        "mobile": None,
        "invalid": PHONE_INVALID,
        "foreign": PHONE_NOT_INDONESIAN,
        "not_mobile": PHONE_NOT_MOBILE,
    }[kind]


UNDELIVERABLE_TEXT = {
    PHONE_INVALID: "nomor telepon tidak valid",
    PHONE_NOT_MOBILE: "bukan nomor seluler (telepon rumah/kantor)",
    PHONE_NOT_INDONESIAN: "bukan nomor Indonesia (+62)",
}


# --- what a provider answered -------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The provider took the message: from here on it must never be sent again."""

    provider_message_id: str
    status: str
    segments: int


@dataclass(frozen=True)
class Refused:
    """The provider answered and did not take the message: sending again is safe."""

    retryable: bool  # 429 / 5xx / could not connect: yes; 4xx: no
    error: str
    http_status: int | None = None
    retry_after_s: float | None = None
    provider_code: str | None = None


@dataclass(frozen=True)
class Unknown:
    """No answer (timeout after the request went out, connection dropped): the provider
    may or may not have taken it. Ask the provider before any resend."""

    error: str


SendResult = Accepted | Refused | Unknown


# --- what to do next ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, for `horizon_s` from a message's first try."""

    base_s: float
    max_s: float
    horizon_s: float

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds before try `attempt + 1`: exponential with equal jitter, at least what
        the provider asked for in Retry-After."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(60, max(0, attempt - 1)))
        jittered = ceiling / 2 + rng.random() * ceiling / 2
        if retry_after_s is not None:
            return max(retry_after_s, min(jittered, self.max_s))
        return jittered


Next = Literal["accepted", "retry", "failed", "reconcile"]


@dataclass(frozen=True)
class Verdict:
    next: Next
    delay_s: float = 0.0
    code: str | None = None
    error: str | None = None


def judge(
    result: SendResult, attempt: int, age_s: float, policy: RetryPolicy, rng: random.Random
) -> Verdict:
    """What one provider answer means for a message tried `attempt` times, the first
    `age_s` seconds ago."""
    if isinstance(result, Accepted):
        return Verdict("accepted")
    if isinstance(result, Unknown):
        # Ambiguous: reconcile with the provider first (after a pause, so a slow provider
        # has written the message down). Never failed blindly: it may have been taken.
        return Verdict("reconcile", policy.delay(attempt, None, rng), error=result.error)
    if not result.retryable:
        return Verdict("failed", code=PROVIDER_REFUSED, error=result.error)
    delay = policy.delay(attempt, result.retry_after_s, rng)
    if age_s + delay > policy.horizon_s:
        return Verdict("failed", code=RETRIES_EXHAUSTED, error=result.error)
    return Verdict("retry", delay, error=result.error)


def after_reconcile_miss(age_s: float, policy: RetryPolicy) -> Verdict:
    """The provider has no record of an ambiguous send: it may go again, within the horizon."""
    if age_s > policy.horizon_s:
        return Verdict("failed", code=RETRIES_EXHAUSTED, error="no answer from the provider")
    return Verdict("retry", 0.0)
