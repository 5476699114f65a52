"""The eligibility rule: plain values in, a decision out. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from perlinsos_eligibility.reasons import reason
from perlinsos_eligibility.rules import RuleSet
from perlinsos_shared.events import Address, DecisionReason, FundingLine, Occupation
from perlinsos_shared.wilayah import is_batam_address


@dataclass(frozen=True)
class Applicant:
    birth_date: date
    address: Address
    occupation: Occupation
    existing_bpjs_tk: bool


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "eligible" | "ineligible"
    funding_line: FundingLine | None
    reasons: list[DecisionReason] = field(default_factory=list)


def age_on(birth_date: date, day: date) -> int:
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def decide(applicant: Applicant, rules: RuleSet, cover_start: date) -> Verdict:
    reasons: list[DecisionReason] = []
    line = rules.line_of.get(applicant.occupation)
    if line is None:
        reasons.append(reason("OCCUPATION_NOT_COVERED"))
    if not is_batam_address(applicant.address.kecamatan or "", applicant.address.kelurahan or ""):
        reasons.append(reason("DOMICILE_NOT_BATAM"))
    age = age_on(applicant.birth_date, cover_start)
    if not rules.min_age <= age < rules.max_age_exclusive:
        reasons.append(reason("AGE_OUT_OF_RANGE"))
    if applicant.existing_bpjs_tk:
        reasons.append(reason("ALREADY_BPJS_MEMBER"))
    if reasons:
        return Verdict("ineligible", line, reasons)
    return Verdict("eligible", line)
