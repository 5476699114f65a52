"""Registry's intake plan on plain values: every batch case, no broker, no database.

`plan_intake` decides a validated batch against what registry already holds; these cases
are the ones the flow test exercised through Kafka and PostgreSQL, plus re-enrolment.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from perlinsos_registry import testing
from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.intake import (
    DeadLetter,
    Emit,
    IntakeMessage,
    IntakePlan,
    KnownState,
    Member,
    Reply,
    plan_intake,
    read_intake,
)
from perlinsos_registry.testing import enrolment, nik
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.events import (
    EnrolmentSubmitted,
    ExitReported,
    Occupation,
    ParticipantEnrolled,
    ParticipantExited,
)

POLICY = AgencyPolicy.from_mapping(
    {"DISNAKER": ["*"], "DISHUB": ["OJEK_DARING", "BECAK"], "KELURAHAN": ["KETUA_RT"]}
)
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=BATAM_TZ)
TODAY = NOW.date()
ENROL = EnrolmentSubmitted.event_type
EXIT = ExitReported.event_type


def exit_of(
    n: int = 1, agency: str = "DISHUB", rid: str = "X-1", on: date = TODAY, **data: Any
) -> dict[str, Any]:
    return testing.exit_of(n, on, agency, rid, **data)


def msg(
    event_type: str, data: Any, source: str | None = None, verified: bool = True
) -> IntakeMessage:
    agency = data.get("agency") if isinstance(data, dict) else None
    return IntakeMessage(
        id=f"ev-{id(data)}", type=event_type, source=source or f"agency/{agency}", data=data,
        origin_verified=verified,
    )  # fmt: skip


def plan(messages: Sequence[IntakeMessage], known: KnownState | None = None) -> IntakePlan:
    ids = (f"P{i}" for i in itertools.count(1))
    return plan_intake(
        read_intake(messages, POLICY),
        known or KnownState(),
        POLICY,
        now=NOW,
        event_ids=[m.id for m in messages],
        new_id=lambda: next(ids),
    )


def member(n: int = 1, **changes: Any) -> dict[str, Member]:
    base: dict[str, Any] = {
        "participant_id": f"OLD{n}",
        "occupation": Occupation.OJEK_DARING,
        "enrolled_on": date(2025, 10, 1),
        "agency": "DISHUB",
    }
    return {nik(n): Member(**{**base, **changes})}


def codes(p: IntakePlan) -> list[tuple[str | None, list[str]]]:
    return [(r.request_id, [x.code for x in r.reasons]) for r in p.replies]


# --- enrolments ----------------------------------------------------------------------


def test_a_valid_enrolment_is_recorded_enrolled_audited_and_announced() -> None:
    p = plan([msg(ENROL, enrolment(1))])
    assert [(c.agency, c.request_id, c.outcome, c.participant_id) for c in p.claims] == [
        ("DISHUB", "DISHUB-1", "accepted", "P1")
    ]
    assert [(e.participant_id, e.membership, e.phone_e164) for e in p.enrolments] == [
        ("P1", 1, "+6281234567890")
    ]
    assert [(a.participant_id, a.action) for a in p.audit] == [("P1", "enrolled")]
    (event,) = p.events
    assert isinstance(event, ParticipantEnrolled)
    assert (event.participant_id, event.nik, event.membership, event.enrolled_at) == (
        "P1", nik(1), 1, NOW,
    )  # fmt: skip
    assert p.replies == [] and p.dead_letters == []


def test_an_invalid_enrolment_is_recorded_refused_and_answered_with_every_reason() -> None:
    p = plan([msg(ENROL, enrolment(1, sex="P", phone="0778-123456"))])
    assert [(c.request_id, c.outcome) for c in p.claims] == [("DISHUB-1", "rejected")]
    assert codes(p) == [("DISHUB-1", ["SEX_MISMATCH", "PHONE_NOT_MOBILE"])]
    assert p.enrolments == [] and p.events == []


def test_the_same_request_twice_in_one_batch_counts_once() -> None:
    p = plan([msg(ENROL, enrolment(1)), msg(ENROL, enrolment(1))])
    assert len(p.claims) == 1 and len(p.enrolments) == 1 and len(p.outputs) == 1
    # a refused request repeated in the batch: one record, one reply
    bad = enrolment(2, sex="P")
    p = plan([msg(ENROL, bad), msg(ENROL, bad)])
    assert len(p.claims) == 1 and codes(p) == [("DISHUB-2", ["SEX_MISMATCH"])]


def test_a_resubmission_of_a_recorded_request_changes_nothing_and_says_nothing() -> None:
    known = KnownState(claimed=frozenset({("DISHUB", "DISHUB-1"), ("DISHUB", "X-1")}))
    p = plan([msg(ENROL, enrolment(1)), msg(EXIT, exit_of(1))], known)
    assert p == IntakePlan()


def test_a_nik_already_a_member_is_duplicate_naming_the_agency_that_holds_it() -> None:
    p = plan([msg(ENROL, enrolment(1, agency="DISNAKER"))], KnownState(members=member(1)))
    assert codes(p) == [("DISNAKER-1", ["DUPLICATE_NIK"])]
    assert "DISHUB" in p.replies[0].reasons[0].message
    assert [c.outcome for c in p.claims] == ["rejected"] and p.enrolments == []


def test_two_agencies_enrolling_one_nik_in_one_batch_the_first_wins() -> None:
    p = plan(
        [msg(ENROL, enrolment(1, agency="DISHUB")), msg(ENROL, enrolment(1, agency="DISNAKER"))]
    )
    assert [e.submission.agency for e in p.enrolments] == ["DISHUB"]
    assert codes(p) == [("DISNAKER-1", ["DUPLICATE_NIK"])]
    assert "DISHUB" in p.replies[0].reasons[0].message


def test_agency_not_allowed_for_the_occupation() -> None:
    p = plan([msg(ENROL, enrolment(1, agency="KELURAHAN"))])
    assert codes(p) == [("KELURAHAN-1", ["AGENCY_NOT_ALLOWED"])]


def test_source_other_than_the_agency_is_refused() -> None:
    p = plan([msg(ENROL, enrolment(1), source="agency/ASING")])
    assert codes(p) == [("DISHUB-1", ["SCHEMA_INVALID"])]


# --- who gets a reply, who a dead letter -----------------------------------------------


def test_no_agency_anywhere_goes_to_the_dead_letter_topic() -> None:
    p = plan([msg(ENROL, {"nik": "1"}, source="unknown-system")])
    assert p.outputs == [DeadLetter(0, "SCHEMA_INVALID: no agency in data or source")]
    assert p.claims == []


def test_an_answerable_message_without_request_id_is_answered_not_recorded() -> None:
    p = plan([msg(ENROL, {"agency": "DISHUB"})])
    assert [(r.agency, r.request_id) for r in p.replies] == [("DISHUB", None)]
    assert {x.code for x in p.replies[0].reasons} == {"SCHEMA_INVALID"}
    assert p.claims == []


def test_an_unknown_type_is_answered_when_the_agency_is_known_else_dead_lettered() -> None:
    amended = "perlinsos.enrolment.amended.v1"
    p = plan(
        [
            msg(amended, {"agency": "DISHUB", "request_id": "T-1"}),
            msg(amended, {}, source="unknown-system"),
        ]
    )
    assert codes(p) == [("T-1", ["UNKNOWN_EVENT_TYPE"])]
    assert p.outputs[1] == DeadLetter(1, f"UNKNOWN_EVENT_TYPE: {amended}")
    assert p.claims == []


def test_a_message_of_unproven_origin_is_answered_and_does_not_take_the_pair() -> None:
    forged = msg(ENROL, enrolment(1), verified=False)
    p = plan([forged, msg(ENROL, enrolment(1))])
    assert codes(p) == [("DISHUB-1", ["SOURCE_UNVERIFIED"])]
    assert [e.submission.request_id for e in p.enrolments] == ["DISHUB-1"]


def test_outputs_keep_arrival_order_and_point_at_their_message() -> None:
    p = plan(
        [
            msg(ENROL, enrolment(1)),
            msg(ENROL, {"nik": "1"}, source="x"),
            msg(ENROL, enrolment(2, sex="P")),
            msg(EXIT, exit_of(1)),
        ]
    )
    assert [(type(o).__name__, o.at) for o in p.outputs] == [
        ("Emit", 0), ("DeadLetter", 1), ("Reply", 2), ("Emit", 3),
    ]  # fmt: skip


# --- exits -----------------------------------------------------------------------------


def test_an_exit_after_an_enrolment_in_the_same_batch_finds_it() -> None:
    p = plan([msg(ENROL, enrolment(1)), msg(EXIT, exit_of(1))])
    assert [(x.participant_id, x.membership) for x in p.exits] == [("P1", 1)]
    assert [type(e).__name__ for e in p.events] == ["ParticipantEnrolled", "ParticipantExited"]
    assert [a.action for a in p.audit] == ["enrolled", "exited"]


def test_an_exit_of_a_known_member_is_applied() -> None:
    p = plan([msg(EXIT, exit_of(1, rid="X-9", reason="DECEASED"))], KnownState(members=member(1)))
    (event,) = p.events
    assert isinstance(event, ParticipantExited)
    assert (event.participant_id, event.reason.value, event.effective_date) == (
        "OLD1",
        "DECEASED",
        TODAY,
    )
    assert [(c.outcome, c.participant_id, c.kind) for c in p.claims] == [
        ("accepted", "OLD1", "exit")
    ]


def test_exit_refusals_unknown_already_exited_before_enrolment_not_allowed() -> None:
    known = KnownState(members={**member(1), **member(2, exited_on=date(2026, 1, 5))})
    p = plan(
        [
            msg(EXIT, exit_of(9, rid="X-UNK")),
            msg(EXIT, exit_of(2, rid="X-TWICE")),
            msg(EXIT, exit_of(1, rid="X-EARLY", on=date(2025, 1, 1))),
            msg(EXIT, exit_of(1, agency="KELURAHAN", rid="X-NA")),
        ],
        known,
    )
    assert codes(p) == [
        ("X-UNK", ["UNKNOWN_NIK"]),
        ("X-TWICE", ["ALREADY_EXITED"]),
        ("X-EARLY", ["EXIT_BEFORE_ENROLMENT"]),
        ("X-NA", ["AGENCY_NOT_ALLOWED"]),
    ]
    assert p.exits == [] and [c.outcome for c in p.claims] == ["rejected"] * 4


def test_a_second_exit_in_one_batch_is_already_exited() -> None:
    p = plan(
        [msg(EXIT, exit_of(1, rid="X-1")), msg(EXIT, exit_of(1, rid="X-2"))],
        KnownState(members=member(1)),
    )
    assert len(p.exits) == 1 and codes(p) == [("X-2", ["ALREADY_EXITED"])]


def test_an_invalid_exit_is_refused_with_its_schema_reasons() -> None:
    p = plan([msg(EXIT, exit_of(1, reason="BORED"))])
    assert codes(p) == [("X-1", ["SCHEMA_INVALID"])]


# --- coming back (re-enrolment) ---------------------------------------------------------


def test_a_person_whose_membership_ended_is_enrolled_again_as_the_same_participant() -> None:
    known = KnownState(members=member(1, exited_on=TODAY - timedelta(days=1)))
    p = plan([msg(ENROL, enrolment(1, agency="DISNAKER", rid="BACK-1"))], known)
    (e,) = p.enrolments
    assert (e.participant_id, e.membership) == ("OLD1", 2)
    (event,) = p.events
    assert isinstance(event, ParticipantEnrolled)
    assert (event.participant_id, event.membership, event.agency) == ("OLD1", 2, "DISNAKER")
    (audit,) = p.audit
    assert audit.action == "re-enrolled"
    assert audit.changes["membership"] == {"old": 1, "new": 2}
    assert [(c.outcome, c.participant_id) for c in p.claims] == [("accepted", "OLD1")]


def test_a_re_enrolment_on_or_before_the_exit_date_is_duplicate() -> None:
    for last_day in (TODAY, TODAY + timedelta(days=10)):
        p = plan([msg(ENROL, enrolment(1))], KnownState(members=member(1, exited_on=last_day)))
        assert codes(p) == [("DISHUB-1", ["DUPLICATE_NIK"])]
        assert last_day.isoformat() in p.replies[0].reasons[0].message


def test_after_a_re_enrolment_the_person_can_exit_again_and_only_once() -> None:
    known = KnownState(members=member(1, exited_on=date(2026, 3, 31)))
    p = plan(
        [
            msg(ENROL, enrolment(1, rid="BACK-1")),
            msg(EXIT, exit_of(1, rid="X-2")),
            msg(EXIT, exit_of(1, rid="X-3")),
            msg(ENROL, enrolment(1, rid="BACK-2")),
        ],
        known,
    )
    assert [(x.participant_id, x.membership) for x in p.exits] == [("OLD1", 2)]
    assert codes(p) == [("X-3", ["ALREADY_EXITED"]), ("BACK-2", ["DUPLICATE_NIK"])]
    assert [a.action for a in p.audit] == ["re-enrolled", "exited"]


def test_emits_reference_their_message() -> None:
    p = plan([msg(ENROL, enrolment(1)), msg(ENROL, enrolment(2))])
    assert [o.at for o in p.outputs if isinstance(o, Emit)] == [0, 1]
    assert all(isinstance(o, Emit | Reply | DeadLetter) for o in p.outputs)


BATCH_CASES = {
    "DUPLICATE_NIK": lambda: plan([msg(ENROL, enrolment(1))], KnownState(members=member(1))),
    "UNKNOWN_EVENT_TYPE": lambda: plan([msg("perlinsos.x.v9", {"agency": "DISHUB"})]),
    "SOURCE_UNVERIFIED": lambda: plan([msg(ENROL, enrolment(1), verified=False)]),
}


@pytest.mark.parametrize("code", sorted(BATCH_CASES))
def test_batch_reason_code(code: str) -> None:
    """The codes only a batch decides, each produced by a plan (see test_validation.py)."""
    (reply,) = BATCH_CASES[code]().replies
    assert [r.code for r in reply.reasons] == [code]
