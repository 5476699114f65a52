"""Every event model carried in the CloudEvents `data` field, one class per `type`.

Public contracts (intake, intake replies, finance summaries) follow DESIGN.md exactly;
internal topics are the services' own design. Unknown fields are ignored everywhere so
producers can add fields without breaking consumers; a new meaning gets a new version.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event_type: ClassVar[str]


class Occupation(StrEnum):
    OJEK_DARING = "OJEK_DARING"
    BECAK = "BECAK"
    BOAT_PANCUNG = "BOAT_PANCUNG"
    NELAYAN = "NELAYAN"
    KETUA_RT = "KETUA_RT"
    KETUA_RW = "KETUA_RW"
    KADER_POSYANDU = "KADER_POSYANDU"
    KADER_SIAGA = "KADER_SIAGA"
    KETUA_LPM = "KETUA_LPM"


class FundingLine(StrEnum):
    PERWAKO_49_2025 = "PERWAKO-49-2025"
    PERWAKO_30_2025 = "PERWAKO-30-2025"
    PERWAKO_3_2023 = "PERWAKO-3-2023"


class ExitReason(StrEnum):
    DECEASED = "DECEASED"
    MOVED_AWAY = "MOVED_AWAY"
    ROLE_ENDED = "ROLE_ENDED"
    OTHER = "OTHER"


class Address(BaseModel):
    """The KTP domicile. Parts may be missing on intake; registry reports that."""

    model_config = ConfigDict(extra="ignore")
    kecamatan: str | None = None
    kelurahan: str | None = None
    rt: str | None = None
    rw: str | None = None
    street: str | None = None


class Evidence(BaseModel):
    """What proves the occupation: a decree, a KUSUKA card, a platform id or association."""

    model_config = ConfigDict(extra="ignore")
    sk_number: str | None = None
    kusuka_number: str | None = None
    platform: str | None = None
    driver_id: str | None = None
    association: str | None = None


# --- registry.intake.v1 (public: upstream agencies -> registry) -------------------------


class EnrolmentSubmitted(Contract):
    event_type: ClassVar[str] = "perlinsos.enrolment.submitted.v1"
    agency: str = Field(min_length=1, description="agency code, e.g. DISHUB; matches source")
    request_id: str = Field(min_length=1, description="the agency's own reference")
    nik: str = Field(description="16 digits")
    full_name: str = Field(min_length=1)
    birth_date: date
    sex: Literal["L", "P"]
    phone: str
    address: Address
    occupation: Occupation
    evidence: Evidence = Field(default_factory=Evidence)
    existing_bpjs_tk: bool = False


class ExitReported(Contract):
    event_type: ClassVar[str] = "perlinsos.enrolment.exit-reported.v1"
    agency: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    nik: str
    reason: ExitReason
    effective_date: date


# --- registry.intake-rejected.v1 (public: registry -> agencies) -----------------------


class Reason(BaseModel):
    """One problem: a stable upper-case code, the field concerned, an Indonesian message."""

    code: str
    field: str | None = None
    message: str


class IntakeRejected(Contract):
    event_type: ClassVar[str] = "perlinsos.intake.rejected.v1"
    agency: str | None
    request_id: str | None
    nik_masked: str | None
    reasons: list[Reason]


# --- registry.participants.v1 (internal: registry -> eligibility) ---------------------


class ParticipantEnrolled(Contract):
    event_type: ClassVar[str] = "perlinsos.participant.enrolled.v1"
    participant_id: str
    nik: str
    full_name: str
    birth_date: date
    sex: Literal["L", "P"]
    phone_e164: str
    address: Address
    occupation: Occupation
    existing_bpjs_tk: bool
    agency: str
    request_id: str
    enrolled_at: datetime
    membership: int = Field(
        default=1,
        ge=1,
        description="1 for a first enrolment; 2, 3, ... when the same participant (same"
        " participant_id) is enrolled again after an exit: a new membership period",
    )


class ParticipantExited(Contract):
    event_type: ClassVar[str] = "perlinsos.participant.exited.v1"
    participant_id: str
    agency: str
    request_id: str
    reason: ExitReason
    effective_date: date


# --- eligibility.decisions.v1 (internal: eligibility -> premium, notify) --------------


class DecisionReason(BaseModel):
    code: str
    message: str
    # The values behind the message (rule bounds, the year of a quota, the next funded
    # month as YYYY-MM), so notify can word it for an SMS without knowing the rules.
    params: dict[str, str | int] = Field(default_factory=dict)


Outcome = Literal["eligible", "ineligible", "waitlisted", "exited"]


class EligibilityDecided(Contract):
    """A decision on one participant. `exited` ends cover on `cover_end`."""

    event_type: ClassVar[str] = "perlinsos.eligibility.decided.v1"
    decision_id: str
    participant_id: str
    outcome: Outcome
    reasons: list[DecisionReason] = Field(default_factory=list)
    funding_line: FundingLine | None = None
    cover_start: date | None = None
    cover_end: date | None = None
    rule_version: str
    promoted: bool = False
    occupation: Occupation
    agency: str
    request_id: str
    first_name: str
    phone_e164: str
    decided_at: datetime
    # The participant's NIK on the decision that answers an enrolment, so notify can
    # answer `perlinsos notify status NIK` (notify keeps only a pseudonym and the masked
    # form). Absent on later decisions (promotion, exit): look those up by participant id.
    nik: str | None = None
    # Why an `exited` decision ended cover (registry's exit reason); absent when cover ended
    # for another cause (a re-evaluation under changed rules). A DECEASED exit is answered
    # with condolences to the family, never with "your cover ended".
    exit_reason: ExitReason | None = None
    # How to address the person: sex from the KTP and the full name (notify picks the
    # first word that is a name). Absent on decisions made before these fields existed.
    sex: Literal["L", "P"] | None = None
    full_name: str | None = None


# --- premium.summaries.v1 (public: premium -> finance) --------------------------------


class PremiumSummary(Contract):
    event_type: ClassVar[str] = "perlinsos.premium.summary.v1"
    funding_line: FundingLine
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    status: Literal["provisional", "closed"]
    revision: int = Field(ge=1)
    participants: int = Field(ge=0)
    jkk_idr: int
    jkm_idr: int
    adjustments_idr: int
    amount_idr: int
    budget_idr: int
    budget_used_idr: int


class LineArrears(BaseModel):
    """Payment state of a funding line, carried beside a summary (extra, optional fields).

    Not part of the DESIGN.md field list: consumers that know only the contract ignore it.
    """

    model_config = ConfigDict(extra="ignore")
    paid_idr: int = Field(default=0, description="paid to BPJS for this line-month")
    outstanding_idr: int = Field(default=0, description="amount_idr minus paid_idr")
    overdue_periods: list[str] = Field(
        default_factory=list, description="this line's months unpaid after their due date"
    )
    lapse_risk: bool = Field(
        default=False,
        description="a due date of this line was missed: participants may lose their cover",
    )
    months_unpaid: int = Field(default=0, description="months of this line unpaid past due")
    people_at_risk: int = Field(
        default=0, description="participants billed in this line's unpaid, past-due months"
    )
    lapses_on: date | None = Field(
        default=None,
        description="the day participation lapses if nothing more is paid (BPU: the third "
        "consecutive missed due date, counted from the earliest unpaid month)",
    )


class LinePlaces(BaseModel):
    """Funded places against people billed (extra, optional fields beside a summary).

    When a line's quota falls at a year change, holders keep their cover until they exit;
    these say how many are above the places the year's budget pays for, and their cost.
    """

    model_config = ConfigDict(extra="ignore")
    places_funded: int | None = Field(
        default=None, description="places the fiscal year's allocation pays for (its quota)"
    )
    above_quota: int = Field(
        default=0, description="participants billed beyond places_funded in this period"
    )
    above_quota_idr: int = Field(
        default=0, description="what the participants above the quota cost in this period"
    )


class PremiumSummaryWithArrears(PremiumSummary, LineArrears, LinePlaces):
    """`perlinsos.premium.summary.v1` as premium publishes it: the contract plus arrears
    and places above the quota."""


# --- premium.payments.v1 (finance -> premium) ------------------------------------------


class PaymentRecorded(Contract):
    """Finance paid BPJS Ketenagakerjaan for one funding line and contribution month."""

    event_type: ClassVar[str] = "perlinsos.premium.payment-recorded.v1"
    funding_line: FundingLine
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="contribution month")
    amount_idr: int = Field(gt=0, description="integer rupiah paid")
    paid_on: date = Field(description="value date of the transfer (Asia/Jakarta)")
    reference: str = Field(
        min_length=1, max_length=100, description="SP2D / bank reference; unique per line"
    )
    recorded_by: str | None = Field(default=None, description="finance officer or system")


# --- notify.deliveries.v1 (internal: notify -> operators) -----------------------------


class SmsDelivery(Contract):
    event_type: ClassVar[str] = "perlinsos.sms.delivery.v1"
    participant_id: str
    decision_id: str
    template: str
    status: Literal["accepted", "failed", "undeliverable"]
    provider: str
    provider_message_id: str | None = None
    segments: int | None = None
    attempts: int = 1
    error: str | None = None
    # A stable upper-case reason for failed / undeliverable (e.g. PHONE_NOT_MOBILE).
    code: str | None = None


# --- bpjs.memberships.v1 (finance -> registry) ----------------------------------------

BpjsAnswer = Literal["KPJ_ASSIGNED", "ALREADY_BPJS_MEMBER", "REFUSED"]


class BpjsMembershipAnswered(Contract):
    """One row of BPJS Ketenagakerjaan's answer to a collective registration."""

    event_type: ClassVar[str] = "perlinsos.bpjs.membership-answered.v1"
    import_id: str = Field(description="the answer file (sha256 of its bytes)")
    row: int = Field(ge=1, description="the row in the answer file")
    nik: str = Field(pattern=r"^\d{16}$")
    answer: BpjsAnswer
    kpj: str | None = Field(default=None, pattern=r"^\d{11}$", description="membership number")
    cover_start: date | None = Field(default=None, description="BPJS's cover start")
    refusal: str | None = Field(default=None, max_length=200, description="BPJS's words")


class ParticipantBpjsAnswered(Contract):
    """Registry stored BPJS's answer for a participant (on `registry.participants.v1`)."""

    event_type: ClassVar[str] = "perlinsos.participant.bpjs-answered.v1"
    participant_id: str
    answer: BpjsAnswer
    kpj: str | None = None
    cover_start: date | None = None
    refusal: str | None = None
    import_id: str
    row: int


# --- premium.reconciliations.v1 (finance -> finance, operators) -----------------------


class InvoiceReconciled(Contract):
    """BPJS's bill for one funding line and month against premium's ledger: counts and
    amounts, no person."""

    event_type: ClassVar[str] = "perlinsos.premium.invoice-reconciled.v1"
    funding_line: FundingLine
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="contribution month")
    invoice_id: str = Field(description="the bill file (sha256 of its bytes)")
    rows: int = Field(ge=0)
    billed_idr: int = Field(description="what BPJS bills, rows that could be read")
    owed_idr: int = Field(description="what premium's ledger owes for the line and month")
    difference_idr: int = Field(description="billed_idr - owed_idr")
    counts: dict[str, int] = Field(description="findings by code (MATCHED, BILLED_NOT_COVERED ...)")


ALL_EVENTS: tuple[type[Contract], ...] = (
    EnrolmentSubmitted,
    ExitReported,
    IntakeRejected,
    ParticipantEnrolled,
    ParticipantExited,
    EligibilityDecided,
    PremiumSummary,
    SmsDelivery,
    PaymentRecorded,
    BpjsMembershipAnswered,
    ParticipantBpjsAnswered,
    InvoiceReconciled,
)
