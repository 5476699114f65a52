"""Delivery rules on plain values: who can get an SMS, what answers mean, retry timing."""

from __future__ import annotations

import random

import pytest

from perlinsos_notify.delivery import (
    PHONE_INVALID,
    PHONE_NOT_INDONESIAN,
    PHONE_NOT_MOBILE,
    PROVIDER_REFUSED,
    RETRIES_EXHAUSTED,
    Accepted,
    Refused,
    RetryPolicy,
    Unknown,
    after_reconcile_miss,
    judge,
    undeliverable_reason,
)
from perlinsos_notify.providers import parse_retry_after

POLICY = RetryPolicy(base_s=1.0, max_s=30.0, horizon_s=86400.0)


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+6281234567890", None),
        ("+6285211112222", None),
        ("+62778123456", PHONE_NOT_MOBILE),  # Batam landline
        ("+6581234567", PHONE_NOT_INDONESIAN),  # a Singapore mobile
        ("+62812", PHONE_INVALID),
        ("081234567890", PHONE_INVALID),  # not E.164
        ("+62812abc4567", PHONE_INVALID),
        ("", PHONE_INVALID),
    ],
)
def test_only_indonesian_mobiles_get_sms(phone: str, reason: str | None) -> None:
    assert undeliverable_reason(phone) == reason


def test_accepted_is_final_and_unknown_is_reconciled() -> None:
    rng = random.Random(1)
    assert judge(Accepted("SM1", "queued", 1), 1, 0.0, POLICY, rng).next == "accepted"
    v = judge(Unknown("timeout"), 1, 0.0, POLICY, rng)
    assert v.next == "reconcile" and 0.5 <= v.delay_s <= 1.0


def test_retryable_refusals_back_off_exponentially_with_jitter() -> None:
    rng = random.Random(7)
    delays = [judge(Refused(True, "HTTP 500"), n, 0.0, POLICY, rng).delay_s for n in (1, 2, 3)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert 2.0 <= delays[2] <= 4.0
    many = {round(judge(Refused(True, "x"), 3, 0.0, POLICY, rng).delay_s, 6) for _ in range(20)}
    assert len(many) > 10  # jitter: instances do not retry in lockstep


def test_retry_after_is_honoured() -> None:
    v = judge(Refused(True, "HTTP 429", 429, retry_after_s=12.0), 1, 0.0, POLICY, random.Random(1))
    assert v.next == "retry" and v.delay_s >= 12.0


def test_retries_stop_at_the_horizon_and_4xx_fails_at_once() -> None:
    rng = random.Random(1)
    # a provider down for a minute: still retried, the backoff capped
    minute = judge(Refused(True, "HTTP 503"), 40, 60.0, POLICY, rng)
    assert minute.next == "retry" and minute.delay_s <= POLICY.max_s
    hours = judge(Refused(True, "HTTP 503"), 300, 23 * 3600.0, POLICY, rng)
    assert hours.next == "retry"
    last = judge(Refused(True, "HTTP 503"), 301, 86400.0 - 1, POLICY, rng)
    assert (last.next, last.code) == ("failed", RETRIES_EXHAUSTED)
    bad = judge(Refused(False, "HTTP 400 21211"), 1, 0.0, POLICY, rng)
    assert (bad.next, bad.code) == ("failed", PROVIDER_REFUSED)
    assert after_reconcile_miss(3600.0, POLICY).next == "retry"
    assert after_reconcile_miss(86401.0, POLICY).code == RETRIES_EXHAUSTED


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
