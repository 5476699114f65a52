"""Registry's decisions on a batch of intake, as a pure plan.

`read_intake` validates each message on its own (`validation.py`); `plan_intake` decides
the batch against what registry already holds (`KnownState`) and returns an `IntakePlan`:
the submissions to record, the participants to enrol or re-enrol, the exits to apply,
the audit rows, and what to answer (replies to agencies, dead letters, participant
events) in arrival order. No I/O: the handler loads the state, calls this, and writes the
plan in one transaction.

Rules the batch adds to the per-message checks:

- an (agency, request_id) pair counts once: the first time it is seen (in this batch or
  before) decides its outcome; a resubmission changes nothing and gets no new answer;
- one participant per NIK: a second enrolment while the person is a member is
  `DUPLICATE_NIK`, naming the agency that holds the membership;
- a person whose membership has ended (an exit dated before the new enrolment's Batam
  date) is enrolled again: the same participant id, the next membership number, a new
  decision, cover, bill and SMS downstream. An exit dated today or later still counts
  as membership on that day, so a re-enrolment then is `DUPLICATE_NIK`;
- enrolments and exits are decided in arrival order against the state as the batch
  changes it: an exit after an enrolment of the same NIK in one batch finds it;
- a message whose agency cannot be told goes to the dead-letter topic; one with an agency
  but no request id is answered and not recorded; one whose origin is not verified is
  answered `SOURCE_UNVERIFIED` and not recorded (a forger cannot take a pair's outcome).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.reasons import reason
from perlinsos_registry.validation import (
    ParticipantState,
    agency_of_source,
    check_enrolment,
    check_exit,
    decide_exit,
    duplicate_nik,
    identity,
    normalise_nik,
    unknown_event_type,
)
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.events import (
    EnrolmentSubmitted,
    ExitReported,
    ParticipantEnrolled,
    ParticipantExited,
    Reason,
)

Pair = tuple[str, str]  # (agency, request_id)
Kind = Literal["enrolment", "exit"]


@dataclass(frozen=True)
class IntakeMessage:
    """One decoded intake event as plain values. `origin_verified` is False when a proof
    of origin was required and did not hold."""

    id: str
    type: str
    source: str
    data: Any
    origin_verified: bool = True


@dataclass(frozen=True)
class Member(ParticipantState):
    """What registry holds of one person (by NIK): the current or last membership, the
    agency that enrolled it and its number (1 for the first)."""

    agency: str = ""
    membership: int = 1


def still_member(member: Member, today: date) -> bool:
    """A membership lasts through its exit's effective date."""
    return member.exited_on is None or member.exited_on >= today


@dataclass(frozen=True)
class KnownState:
    """The part of registry's state a batch is decided against."""

    claimed: frozenset[Pair] = frozenset()  # pairs recorded before this batch
    members: Mapping[str, Member] = field(default_factory=dict)  # by NIK


# --- what one message says, after validation ------------------------------------------


@dataclass(frozen=True)
class Read:
    """One message, validated on its own: the kind, who to answer, and the outcome."""

    at: int  # position in the batch
    kind: Kind | None  # None: a type that does not belong on the intake topic
    agency: str | None
    request_id: str | None
    nik: str | None
    reasons: list[Reason]
    origin_verified: bool = True
    submission: EnrolmentSubmitted | None = None
    phone_e164: str | None = None
    exit: ExitReported | None = None
    event_type: str = ""

    @property
    def pair(self) -> Pair | None:
        if self.agency is None or self.request_id is None:
            return None
        return (self.agency, self.request_id)


def read_message(at: int, m: IntakeMessage, policy: AgencyPolicy) -> Read:
    raw_agency, request_id, raw_nik = identity(m.data)
    agency = raw_agency or agency_of_source(m.source)
    nik = normalise_nik(raw_nik) if raw_nik is not None else None
    if m.type == EnrolmentSubmitted.event_type:
        checked = check_enrolment(m.data, m.source, policy)
        if checked.submission is not None:
            s = checked.submission
            return Read(
                at,
                "enrolment",
                s.agency,
                s.request_id,
                s.nik,
                [],
                m.origin_verified,
                s,
                checked.phone_e164,
            )
        return Read(at, "enrolment", agency, request_id, nik, checked.reasons, m.origin_verified)
    if m.type == ExitReported.event_type:
        exit_checked = check_exit(m.data, m.source, policy)
        if exit_checked.exit is not None:
            ex = exit_checked.exit
            return Read(
                at, "exit", ex.agency, ex.request_id, ex.nik, [], m.origin_verified, exit=ex
            )
        return Read(at, "exit", agency, request_id, nik, exit_checked.reasons, m.origin_verified)
    return Read(
        at,
        None,
        agency,
        request_id,
        nik,
        [unknown_event_type(m.type)],
        m.origin_verified,
        event_type=m.type,
    )


def read_intake(messages: Sequence[IntakeMessage], policy: AgencyPolicy) -> list[Read]:
    """Every message validated on its own (the CPU-heavy part; done once per batch)."""
    return [read_message(i, m, policy) for i, m in enumerate(messages)]


def wanted(reads: Sequence[Read]) -> tuple[set[Pair], set[str]]:
    """The pairs and NIKs whose state the plan needs."""
    pairs = {r.pair for r in reads if r.pair is not None}
    niks = {r.nik for r in reads if r.nik is not None and r.kind is not None}
    return pairs, niks


# --- the plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A row of `submissions`: the first outcome of an (agency, request_id)."""

    agency: str
    request_id: str
    kind: Kind
    reasons: list[Reason]
    participant_id: str | None
    event_id: str
    nik: str | None

    @property
    def outcome(self) -> str:
        return "rejected" if self.reasons else "accepted"


@dataclass(frozen=True)
class Enrolment:
    """A participant to store: new (membership 1) or enrolled again after an exit."""

    participant_id: str
    submission: EnrolmentSubmitted
    phone_e164: str
    membership: int
    enrolled_at: datetime

    @property
    def full_name(self) -> str:
        return self.submission.full_name.strip()


@dataclass(frozen=True)
class Exit:
    participant_id: str
    exit: ExitReported
    membership: int


@dataclass(frozen=True)
class AuditRow:
    participant_id: str
    agency: str
    request_id: str
    action: Literal["enrolled", "re-enrolled", "exited"]
    changes: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A `perlinsos.intake.rejected.v1` to the agency (the NIK goes out masked)."""

    at: int
    agency: str
    request_id: str | None
    nik: str | None
    reasons: list[Reason]


@dataclass(frozen=True)
class DeadLetter:
    at: int
    error: str


@dataclass(frozen=True)
class Emit:
    """A participant event on `registry.participants.v1`, caused by message `at`."""

    at: int
    event: ParticipantEnrolled | ParticipantExited


Output = Reply | DeadLetter | Emit


@dataclass
class IntakePlan:
    claims: list[Claim] = field(default_factory=list)
    enrolments: list[Enrolment] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)  # in arrival order

    @property
    def replies(self) -> list[Reply]:
        return [o for o in self.outputs if isinstance(o, Reply)]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [o for o in self.outputs if isinstance(o, DeadLetter)]

    @property
    def events(self) -> list[ParticipantEnrolled | ParticipantExited]:
        return [o.event for o in self.outputs if isinstance(o, Emit)]


def batam_date(at: datetime) -> date:
    return at.astimezone(BATAM_TZ).date()


def plan_intake(
    reads: Sequence[Read],
    known: KnownState,
    policy: AgencyPolicy,
    *,
    now: datetime,
    event_ids: Sequence[str],
    new_id: Callable[[], str],
) -> IntakePlan:
    """Decide a validated batch (`read_intake`) against `known`; `event_ids[i]` is the
    CloudEvents id of message i, `new_id()` gives a participant id, `now` is the time of
    enrolment."""
    plan = IntakePlan()
    seen: set[Pair] = set(known.claimed)
    members: dict[str, Member] = dict(known.members)
    today = batam_date(now)
    for r in reads:
        if r.agency is None:
            error = f"UNKNOWN_EVENT_TYPE: {r.event_type[:100]}" if r.kind is None else ""
            plan.outputs.append(
                DeadLetter(r.at, error or "SCHEMA_INVALID: no agency in data or source")
            )
            continue
        if not r.origin_verified:
            plan.outputs.append(
                Reply(r.at, r.agency, r.request_id, r.nik, [reason("SOURCE_UNVERIFIED", "source")])
            )
            continue
        pair = r.pair
        if r.kind is None or pair is None:
            # answerable, not recorded (no pair, or a type intake does not know)
            plan.outputs.append(Reply(r.at, r.agency, r.request_id, r.nik, r.reasons))
            continue
        if pair in seen:
            continue  # a resubmission: its first outcome stands
        seen.add(pair)
        if r.reasons:
            plan.claims.append(Claim(*pair, r.kind, r.reasons, None, event_ids[r.at], r.nik))
            plan.outputs.append(Reply(r.at, *pair, r.nik, r.reasons))
        elif r.submission is not None and r.phone_e164 is not None:
            _enrol(plan, r, r.submission, r.phone_e164, members, now, today, event_ids, new_id)
        elif r.exit is not None:
            _exit(plan, r, r.exit, members, policy, event_ids)
    return plan


def _enrol(
    plan: IntakePlan,
    r: Read,
    sub: EnrolmentSubmitted,
    phone: str,
    members: dict[str, Member],
    now: datetime,
    today: date,
    event_ids: Sequence[str],
    new_id: Callable[[], str],
) -> None:
    before = members.get(sub.nik)
    if before is not None and still_member(before, today):
        refused = [
            duplicate_nik(before.agency)
            if before.exited_on is None
            else reason("DUPLICATE_NIK", "nik", f"masih terdaftar sampai {before.exited_on}")
        ]
        plan.claims.append(
            Claim(sub.agency, sub.request_id, "enrolment", refused, None, event_ids[r.at], sub.nik)
        )
        plan.outputs.append(Reply(r.at, sub.agency, sub.request_id, sub.nik, refused))
        return
    pid = before.participant_id if before else new_id()
    membership = before.membership + 1 if before else 1
    e = Enrolment(pid, sub, phone, membership, now)
    members[sub.nik] = Member(pid, sub.occupation, today, None, sub.agency, membership)
    plan.claims.append(
        Claim(sub.agency, sub.request_id, "enrolment", [], pid, event_ids[r.at], sub.nik)
    )
    plan.enrolments.append(e)
    action: Literal["enrolled", "re-enrolled"] = "re-enrolled" if before else "enrolled"
    plan.audit.append(AuditRow(pid, sub.agency, sub.request_id, action, _enrolment_changes(e)))
    plan.outputs.append(Emit(r.at, participant_enrolled(e)))


def _exit(
    plan: IntakePlan,
    r: Read,
    ex: ExitReported,
    members: dict[str, Member],
    policy: AgencyPolicy,
    event_ids: Sequence[str],
) -> None:
    member = members.get(ex.nik)
    refused = decide_exit(ex, member, policy)
    if refused or member is None:
        plan.claims.append(
            Claim(ex.agency, ex.request_id, "exit", refused, None, event_ids[r.at], ex.nik)
        )
        plan.outputs.append(Reply(r.at, ex.agency, ex.request_id, ex.nik, refused))
        return
    members[ex.nik] = replace(member, exited_on=ex.effective_date)
    pid = member.participant_id
    plan.claims.append(Claim(ex.agency, ex.request_id, "exit", [], pid, event_ids[r.at], ex.nik))
    plan.exits.append(Exit(pid, ex, member.membership))
    changes = {
        "exited_on": {"old": None, "new": ex.effective_date.isoformat()},
        "exit_reason": {"old": None, "new": ex.reason.value},
    }
    plan.audit.append(AuditRow(pid, ex.agency, ex.request_id, "exited", changes))
    event = ParticipantExited(
        participant_id=pid,
        agency=ex.agency,
        request_id=ex.request_id,
        reason=ex.reason,
        effective_date=ex.effective_date,
    )
    plan.outputs.append(Emit(r.at, event))


def participant_enrolled(e: Enrolment) -> ParticipantEnrolled:
    sub = e.submission
    return ParticipantEnrolled(
        participant_id=e.participant_id,
        nik=sub.nik,
        full_name=e.full_name,
        birth_date=sub.birth_date,
        sex=sub.sex,
        phone_e164=e.phone_e164,
        address=sub.address,
        occupation=sub.occupation,
        existing_bpjs_tk=sub.existing_bpjs_tk,
        agency=sub.agency,
        request_id=sub.request_id,
        enrolled_at=e.enrolled_at,
        membership=e.membership,
    )


def _enrolment_changes(e: Enrolment) -> dict[str, Any]:
    sub = e.submission
    new = {
        "nik": sub.nik,
        "full_name": e.full_name,
        "birth_date": sub.birth_date.isoformat(),
        "sex": sub.sex,
        "phone_e164": e.phone_e164,
        "address": sub.address.model_dump(exclude_none=True),
        "occupation": sub.occupation.value,
        "evidence": sub.evidence.model_dump(exclude_none=True),
        "existing_bpjs_tk": sub.existing_bpjs_tk,
    }
    changes: dict[str, Any] = {k: {"old": None, "new": v} for k, v in new.items()}
    # A re-enrolment's earlier values are in the audit rows of the earlier membership.
    changes["membership"] = {"old": e.membership - 1 or None, "new": e.membership}
    return changes
