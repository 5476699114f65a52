"""The eligibility rules: plain values in, assessments and allocations out. No I/O.

`assess` checks one applicant's criteria against the rule set in force on the day cover
would start. `allocate` hands a line's free places to the oldest of a queue (people
already waiting, and newcomers) in arrival order. The handlers put the two together under
a database lock so several instances never over-fill a quota.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Generic, Literal, TypeVar

from perlinsos_eligibility.reasons import DecisionCode, reason
from perlinsos_eligibility.rules import RuleBook, RuleSet
from perlinsos_shared.events import Address, DecisionReason, FundingLine, Occupation
from perlinsos_shared.wilayah import find_kelurahan

NO_RULE_SET = "NONE"

Rule = Literal["OCCUPATION", "DOMICILE", "AGE", "BPJS_MEMBERSHIP", "FUNDING_WINDOW", "QUOTA"]


@dataclass(frozen=True)
class Applicant:
    birth_date: date
    address: Address
    occupation: Occupation
    existing_bpjs_tk: bool


@dataclass(frozen=True)
class Check:
    """One rule applied to one applicant: passed or not, and why (no personal data)."""

    rule: Rule
    passed: bool
    detail: str
    code: DecisionCode | None = None  # the reason code when it failed
    # the rule's values behind a failure (bounds, year, next funded month), for the message
    params: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def reason(self) -> DecisionReason | None:
        return reason(self.code, self.params) if not self.passed and self.code else None

    def as_json(self) -> dict[str, object]:
        return {"rule": self.rule, "passed": self.passed, "detail": self.detail, "code": self.code}


@dataclass(frozen=True)
class Assessment:
    """The criteria (not the quota) checked for one applicant on one cover-start day."""

    funding_line: FundingLine | None
    rule_set: RuleSet | None
    cover_start: date
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[DecisionReason]:
        return [r for r in (c.reason for c in self.checks) if r is not None]

    @property
    def rule_version(self) -> str:
        return self.rule_set.label if self.rule_set is not None else NO_RULE_SET


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day`; a 29 February birthday falls on 1 March in other years."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def _domicile(address: Address) -> Check:
    return _domicile_of(address.kecamatan or "", address.kelurahan or "")


@lru_cache(maxsize=4096)
def _domicile_of(kecamatan: str, kelurahan: str) -> Check:
    """The check of one spelling of a kecamatan and kelurahan: the same for everyone who
    writes it so (a few hundred spellings in a city; a `Check` is never changed)."""
    found = find_kelurahan(kecamatan, kelurahan)
    if found is None:
        return Check(
            "DOMICILE",
            False,
            "kecamatan/kelurahan KTP tidak ditemukan di Kota Batam",
            "DOMICILE_NOT_BATAM",
        )
    place, canonical = found
    return Check("DOMICILE", True, f"Kel. {canonical}, Kec. {place.name}, Kota Batam")


# The checks below are plain values of a few plain values each, the same for everyone
# who has them (a `Check` is never changed once made): kept, not made again per person.


@lru_cache(maxsize=256)
def _occupation_funded(occupation: str, regulation: str) -> Check:
    return Check("OCCUPATION", True, f"{occupation} → {regulation}")


@lru_cache(maxsize=4096)
def _age(age: int, cover_start: date, min_age: int, max_age_exclusive: int) -> Check:
    in_range = min_age <= age < max_age_exclusive
    return Check(
        "AGE",
        in_range,
        f"usia {age} tahun pada {cover_start.isoformat()}; batas "
        f"{min_age} s.d. di bawah {max_age_exclusive}",
        None if in_range else "AGE_OUT_OF_RANGE",
        {
            "min_age": min_age,
            "max_age": max_age_exclusive,
            "oldest": max_age_exclusive - 1,
            "age": age,
        },
    )


@lru_cache(maxsize=2)
def _bpjs_membership(member: bool) -> Check:
    return Check(
        "BPJS_MEMBERSHIP",
        not member,
        "sudah peserta BPJS Ketenagakerjaan" if member else "belum menjadi peserta",
        "ALREADY_BPJS_MEMBER" if member else None,
    )


def assess(
    applicant: Applicant, book: RuleBook, cover_start: date, rules_on: date | None = None
) -> Assessment:
    """Check the criteria of the rule set in force on `rules_on` (default: `cover_start`);
    age is taken on `cover_start`."""
    rules_day = rules_on or cover_start
    line = book.line_of(applicant.occupation, rules_day)
    rule_set = book.in_force(line, rules_day) if line is not None else None
    if line is None or rule_set is None:
        check = Check(
            "OCCUPATION",
            False,
            f"{applicant.occupation.value} tidak didanai oleh Perwako mana pun",
            "OCCUPATION_NOT_COVERED",
        )
        return Assessment(None, None, cover_start, (check,))
    checks: list[Check] = [_occupation_funded(applicant.occupation.value, rule_set.regulation)]
    if rule_set.batam_domicile:
        checks.append(_domicile(applicant.address))
    age = age_on(applicant.birth_date, cover_start)
    checks.append(_age(age, cover_start, rule_set.min_age, rule_set.max_age_exclusive))
    if rule_set.exclude_bpjs_tk_members:
        checks.append(_bpjs_membership(applicant.existing_bpjs_tk))
    return Assessment(line, rule_set, cover_start, tuple(checks))


def window_check(rule_set: RuleSet, day: date) -> Check:
    """Whether the line funds a cover start on `day` (its funded months of the year)."""
    if rule_set.funded_on(day):
        return Check("FUNDING_WINDOW", True, f"{day:%Y-%m} didanai ({rule_set.label})")
    following = rule_set.next_funded_day(day)
    after = f"; bulan didanai berikutnya {following:%Y-%m}" if following else ""
    return Check(
        "FUNDING_WINDOW",
        False,
        f"{day:%Y-%m} tidak didanai ({rule_set.label}){after}",
        "OUTSIDE_FUNDING_WINDOW",
        {"next_month": f"{following:%Y-%m}"} if following else {},
    )


def free_places(rule_set: RuleSet, day: date, holders: int) -> int:
    """Places a line can still give on `day`: none outside its funding window."""
    if not rule_set.funded_on(day):
        return 0
    return max(0, rule_set.quota_on(day) - holders)


def above_quota(rule_set: RuleSet, day: date, holders: int) -> int:
    """Holders beyond the quota of `day`'s fiscal year. When a quota falls at a year
    change (transport: 13,500 in 2025, 10,285 in 2026) holders keep their cover until
    they exit, nobody is evicted, and `free_places` admits nobody new until holders are
    below the quota again; this says by how many the line is over."""
    return max(0, holders - rule_set.quota_on(day))


# --- allocation ---------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class InQueue(Generic[T]):
    """Someone wanting a place: `waiting` already on the waitlist, else a newcomer."""

    item: T
    arrived_at: datetime
    tiebreak: str
    waiting: bool


@dataclass
class Allocation(Generic[T]):
    promoted: list[T] = field(default_factory=list)  # waited, now placed
    admitted: list[T] = field(default_factory=list)  # newcomers placed at once
    waitlisted: list[T] = field(default_factory=list)  # newcomers who must wait
    still_waiting: list[T] = field(default_factory=list)  # waited and still wait


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(moment: datetime) -> timedelta | datetime:
    """What `moment` is sorted by: an aware time as its distance from the epoch (the order
    of the instants, as aware datetimes compare), a naive one as itself. Comparing aware
    datetimes whose tzinfo objects differ (pydantic gives each parsed time its own) asks
    both for their UTC offset on every comparison: sorting a batch of 2,000 took 12 ms
    instead of 1.3."""
    return moment - _EPOCH if moment.utcoffset() is not None else moment


def allocate(free: int, queue: Sequence[InQueue[T]]) -> Allocation[T]:
    """Give `free` places to the oldest in `queue` (arrival time, then tiebreak)."""
    out: Allocation[T] = Allocation()
    ordered = sorted(queue, key=lambda q: (_instant(q.arrived_at), q.tiebreak))
    for i, q in enumerate(ordered):
        placed = i < free
        if q.waiting:
            (out.promoted if placed else out.still_waiting).append(q.item)
        else:
            (out.admitted if placed else out.waitlisted).append(q.item)
    return out
