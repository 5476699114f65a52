"""The topic catalogue: every topic, its key, partitions, retention and event types.

Every topic `X` has a dead-letter twin `X.dlq`. Deploy manifests and the AsyncAPI
document are generated from or checked against this list.
"""

from __future__ import annotations

from dataclasses import dataclass

from perlinsos_shared.events import (
    BpjsMembershipAnswered,
    Contract,
    EligibilityDecided,
    EnrolmentSubmitted,
    ExitReported,
    IntakeRejected,
    InvoiceReconciled,
    ParticipantBpjsAnswered,
    ParticipantEnrolled,
    ParticipantExited,
    PaymentRecorded,
    PremiumSummary,
    SmsDelivery,
)

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    partitions: int
    producer: str
    consumers: tuple[str, ...]
    events: tuple[type[Contract], ...]
    description: str
    compacted: bool = False
    retention_days: int = 30

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX


INTAKE = Topic(
    name="registry.intake.v1",
    key="NIK",
    partitions=6,
    producer="upstream agencies",
    consumers=("registry",),
    events=(EnrolmentSubmitted, ExitReported),
    description="Enrolment and exit events published by upstream agency systems.",
)
INTAKE_REJECTED = Topic(
    name="registry.intake-rejected.v1",
    key="agency:request_id (the agency alone when the request id could not be read)",
    partitions=3,
    producer="registry",
    consumers=("upstream agencies",),
    events=(IntakeRejected,),
    description="Replies to agencies: which submissions were refused and why.",
)
# One agency's replies, on a topic of its own so that a broker ACL can let each agency
# read its own replies and nothing else (`registry.intake-rejected.v1` carries every
# agency's replies and is kept, readable by operators only, until agencies have moved).
# Made per registered agency at set-up; only registry writes it, and only the agency it
# names reads it, so it has no dead-letter twin.
AGENCY_REPLIES = Topic(
    name="registry.intake-rejected.{agency}.v2",
    key="agency:request_id",
    partitions=1,
    producer="registry",
    consumers=("the agency in the topic name",),
    events=(IntakeRejected,),
    description="One agency's replies: which of its submissions were refused and why.",
)


def agency_replies_topic(agency: str) -> str:
    """`registry.intake-rejected.<AGENCY>.v2` for a registered agency code."""
    if not agency or not all(c.isascii() and (c.isalnum() or c in "_-") for c in agency):
        raise ValueError(f"not an agency code: {agency[:64]!r}")
    return AGENCY_REPLIES.name.format(agency=agency)


def rejection_key(agency: str, request_id: str | None) -> str:
    """The key of a reply on `registry.intake-rejected.v1`: `AGENCY:request_id`, or the
    agency alone when the request id could not be read (never `AGENCY:None`)."""
    return f"{agency}:{request_id}" if request_id else agency


PARTICIPANTS = Topic(
    name="registry.participants.v1",
    key="participant_id",
    partitions=6,
    producer="registry",
    consumers=("eligibility", "premium"),
    events=(ParticipantEnrolled, ParticipantExited, ParticipantBpjsAnswered),
    description="Who the participants are: enrolments and exits accepted by registry, and"
    " BPJS Ketenagakerjaan's answer (KPJ or refusal) stored with a participant.",
)
DECISIONS = Topic(
    name="eligibility.decisions.v1",
    key="participant_id",
    partitions=6,
    producer="eligibility",
    consumers=("premium", "notify"),
    events=(EligibilityDecided,),
    description="Eligibility decisions with funding line, cover dates and reasons.",
)
SUMMARIES = Topic(
    name="premium.summaries.v1",
    key="funding_line:period",
    partitions=3,
    producer="premium",
    consumers=("finance",),
    events=(PremiumSummary,),
    description="Monthly premium liability per Perwako funding line; latest revision wins.",
    compacted=True,
    retention_days=-1,
)


DELIVERIES = Topic(
    name="notify.deliveries.v1",
    key="participant_id",
    partitions=3,
    producer="notify",
    consumers=("operators",),
    events=(SmsDelivery,),
    description="What the SMS provider accepted, what failed, what was undeliverable.",
)
PAYMENTS = Topic(
    name="premium.payments.v1",
    key="funding_line:period",
    partitions=1,
    producer="finance",
    consumers=("premium",),
    events=(PaymentRecorded,),
    description="What finance paid BPJS Ketenagakerjaan per funding line and month.",
    retention_days=-1,
)
BPJS_MEMBERSHIPS = Topic(
    name="bpjs.memberships.v1",
    key="NIK",
    partitions=3,
    producer="finance",
    consumers=("registry",),
    events=(BpjsMembershipAnswered,),
    description="BPJS Ketenagakerjaan's answer to a collective registration, one event per"
    " row: a KPJ and BPJS's cover start, or a refusal (perlinsos bpjs import-memberships).",
)
RECONCILIATIONS = Topic(
    name="premium.reconciliations.v1",
    key="funding_line:period",
    partitions=1,
    producer="finance",
    consumers=("operators",),
    events=(InvoiceReconciled,),
    description="BPJS's monthly bill against premium's ledger: counts and amounts per line"
    " and month (perlinsos bpjs reconcile-invoice); the same bill gives the same event id.",
    retention_days=-1,
)

CATALOGUE: tuple[Topic, ...] = (
    INTAKE,
    INTAKE_REJECTED,
    PARTICIPANTS,
    DECISIONS,
    SUMMARIES,
    DELIVERIES,
    PAYMENTS,
    BPJS_MEMBERSHIPS,
    RECONCILIATIONS,
)


def all_topic_names() -> list[str]:
    """Every topic and its dead-letter twin."""
    return [name for t in CATALOGUE for name in (t.name, t.dlq)]


def by_name(name: str) -> Topic:
    for t in CATALOGUE:
        if t.name == name:
            return t
    raise KeyError(name)
