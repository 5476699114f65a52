"""Giving and freeing places, inside the transaction the caller holds.

A `Placement` is one unit of work: it locks the counter rows of the lines it touches
(`line_places`, FOR UPDATE, in name order), so the quota check and the increment are
atomic across every eligibility instance; it asks the pure domain what to do, keeps the
changes, and `finish` writes participants, decisions, counters and the outbox in the same
transaction. Used by the Kafka handler, the promotion loop and the operator commands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from perlinsos_eligibility.domain import (
    Assessment,
    Check,
    InQueue,
    allocate,
    assess,
    free_places,
    window_check,
)
from perlinsos_eligibility.reasons import reason
from perlinsos_eligibility.rules import RuleBook, RuleSet
from perlinsos_eligibility.store import (
    Person,
    Places,
    lock_lines,
    of_line,
    oldest_waiting,
    people,
    save_decisions,
    save_people,
    save_places,
)
from perlinsos_shared.envelope import make_event, new_id
from perlinsos_shared.events import (
    DecisionReason,
    EligibilityDecided,
    ExitReason,
    FundingLine,
    Outcome,
    ParticipantBpjsAnswered,
    ParticipantExited,
)
from perlinsos_shared.metrics import get_meter
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import DECISIONS

SOURCE = "perlinsos/eligibility"

Headers = dict[str, str]

# counted when a batch writes its decisions (labels: outcome and funding line, never a person)
DECISIONS_WRITTEN = get_meter("perlinsos.eligibility").create_counter(
    "perlinsos.eligibility.decisions",
    unit="{decision}",
    description="Eligibility decisions written, by outcome and funding line",
)


@dataclass
class Newcomer:
    person: Person
    headers: Headers = field(default_factory=dict)


@dataclass
class Placement:
    conn: asyncpg.Connection
    book: RuleBook
    now: datetime
    places: dict[str, Places] = field(default_factory=dict)
    changed: dict[str, Person] = field(default_factory=dict)
    unsaved: set[str] = field(default_factory=set)
    decisions: list[tuple[EligibilityDecided, list[dict[str, Any]], Headers]] = field(
        default_factory=list
    )

    @property
    def today(self) -> date:
        return self.now.date()

    # --- the unit of work ------------------------------------------------------------

    async def _lock(self, lines: Iterable[FundingLine]) -> None:
        missing = [line for line in lines if line.value not in self.places]
        if missing:
            self.places.update(await lock_lines(self.conn, missing))

    def _set(self, person: Person) -> Person:
        self.changed[person.participant_id] = person
        self.unsaved.add(person.participant_id)
        return person

    async def _save_people(self) -> None:
        await save_people(self.conn, [self.changed[i] for i in sorted(self.unsaved)])
        self.unsaved.clear()

    async def finish(self, outbox: Outbox) -> list[EligibilityDecided]:
        """Write everything decided; the caller's transaction commits it."""
        await self._save_people()
        await save_places(self.conn, self.places.values())
        await save_decisions(self.conn, [(d, checks) for d, checks, _ in self.decisions])
        for d, _, headers in self.decisions:
            outbox.add(
                DECISIONS.name,
                d.participant_id,
                make_event(SOURCE, d, subject=d.participant_id),
                headers,
            )
        written = Counter(
            (str(d.outcome), str(d.funding_line) if d.funding_line else "none")
            for d, _, _ in self.decisions
        )
        for (outcome, line), n in written.items():
            DECISIONS_WRITTEN.add(n, {"outcome": outcome, "funding_line": line})
        return [d for d, _, _ in self.decisions]

    def _decide(
        self,
        p: Person,
        outcome: Outcome,
        *,
        rule_version: str,
        funding_line: FundingLine | None,
        checks: Sequence[Check] | None = None,
        reasons: Sequence[DecisionReason] = (),
        exit_reason: ExitReason | None = None,
        cover_start: date | None = None,
        cover_end: date | None = None,
        promoted: bool = False,
        state: str | None = None,
        headers: Headers | None = None,
        publish: bool = True,
    ) -> Person:
        """Record a new state for `p` and, if `publish`, the decision that announces it
        (which keeps the checks: the participant's row names it)."""
        check_json = [c.as_json() for c in checks] if checks is not None else p.checks
        decision_id = new_id() if publish else p.decision_id
        updated = self._set(
            p.but(
                outcome=state or outcome,
                funding_line=funding_line,
                cover_start=cover_start,
                cover_end=cover_end,
                rule_version=rule_version,
                decided_at=self.now,
                checks=check_json,
                reasons=[r.model_dump() for r in reasons],
                decision_id=decision_id,
            )
        )
        if publish:
            assert decision_id is not None
            decision = EligibilityDecided(
                decision_id=decision_id,
                participant_id=p.participant_id,
                outcome=outcome,
                reasons=list(reasons),
                funding_line=funding_line,
                cover_start=cover_start,
                cover_end=cover_end,
                rule_version=rule_version,
                promoted=promoted,
                occupation=p.occupation,
                agency=p.agency,
                request_id=p.request_id,
                first_name=p.first_name,
                phone_e164=p.phone_e164,
                decided_at=self.now,
                nik=p.nik,
                exit_reason=exit_reason,
                sex=p.sex,
                full_name=p.full_name,
            )
            self.decisions.append((decision, check_json, headers or {}))
        return updated

    def _refuse(
        self, p: Person, a: Assessment, headers: Headers | None = None, **kw: Any
    ) -> Person:
        return self._decide(
            p,
            "ineligible",
            rule_version=a.rule_version,
            funding_line=a.funding_line,
            checks=a.checks,
            reasons=a.reasons,
            headers=headers,
            **kw,
        )

    # --- filling a line ----------------------------------------------------------------

    async def _fill(
        self,
        line: FundingLine,
        newcomers: Sequence[tuple[Person, Assessment, Headers]],
        day: date,
        rules_on: date | None = None,
    ) -> None:
        """Give the line's free places on `day` to the oldest of waiting + newcomers."""
        places = self.places[line.value]
        rule_set = self.book.in_force(line, rules_on or day)
        assert rule_set is not None
        free = free_places(rule_set, day, places.holders)
        waiting: list[tuple[Person, Assessment, Headers]] = []
        seen: list[str] = []
        # The oldest waiting, re-checked on the day they would start (they may have turned
        # 65 while waiting, or the rules changed); those who fail leave the waitlist.
        while len(waiting) < free and places.waiting > 0:
            rows = await oldest_waiting(self.conn, line, free - len(waiting), seen)
            if not rows:
                break
            for p in rows:
                seen.append(p.participant_id)
                a = assess(p.applicant, self.book, day, rules_on)
                if a.passed:
                    waiting.append((p, a, {}))
                else:
                    places.waiting -= 1
                    self._refuse(p, a)
        queue = [InQueue(n, n[0].enrolled_at, n[0].participant_id, False) for n in newcomers]
        queue += [InQueue(w, w[0].enrolled_at, w[0].participant_id, True) for w in waiting]
        result = allocate(free, queue)
        window = window_check(rule_set, day)
        for p, a, h in result.admitted + result.promoted:
            promoted = p.outcome == "waitlisted"
            quota = _quota_check(rule_set, day, places.holders)
            places.holders += 1
            if promoted:
                places.waiting -= 1
            self._decide(
                p,
                "eligible",
                rule_version=rule_set.label,
                funding_line=line,
                checks=[*a.checks, window, quota],
                cover_start=day,
                promoted=promoted,
                headers=h,
            )
        for p, a, h in result.waitlisted:
            places.waiting += 1
            quota = _quota_check(rule_set, day, places.holders)
            why = (window if not window.passed else quota).reason
            self._decide(
                p,
                "waitlisted",
                rule_version=rule_set.label,
                funding_line=line,
                checks=[*a.checks, window, quota],
                reasons=[why or reason("QUOTA_FULL")],
                headers=h,
            )

    async def _held(self, ids: list[str]) -> dict[str, Person]:
        """The people of `ids`, locked after the places of their lines (the lock order)."""
        seen = await people(self.conn, ids, lock=False)
        seen.update(self.changed)
        await self._lock(p.funding_line for p in seen.values() if p.funding_line)
        current = await people(self.conn, ids, lock=True)
        current.update({k: v for k, v in self.changed.items() if k in current})
        return current

    async def _give_back(self, freed: set[FundingLine]) -> None:
        """Save, then hand the freed places of these lines to the oldest waiting."""
        await self._save_people()
        for line in sorted(freed):
            await self._fill(line, [], self.today)
        await self._save_people()

    # --- what happens ------------------------------------------------------------------

    async def enrol(self, newcomers: Sequence[Newcomer]) -> None:
        """Decide on newly enrolled participants (and re-enrolments after an exit)."""
        known = await people(self.conn, [n.person.participant_id for n in newcomers], lock=False)
        known.update(self.changed)
        fresh: dict[str, Newcomer] = {}
        for n in newcomers:
            before = known.get(n.person.participant_id)
            if before is not None and before.outcome in ("eligible", "waitlisted"):
                continue  # already holds or awaits a place: nothing new to decide
            fresh[n.person.participant_id] = n
        by_line: dict[FundingLine, list[tuple[Person, Assessment, Headers]]] = {}
        for n in fresh.values():
            a = assess(n.person.applicant, self.book, self.today)
            if not a.passed or a.funding_line is None:
                self._refuse(n.person, a, n.headers)
            else:
                by_line.setdefault(a.funding_line, []).append((n.person, a, n.headers))
        await self._lock(by_line)
        for line in sorted(by_line):
            await self._fill(line, by_line[line], self.today)
        await self._save_people()

    async def exit(self, exits: Sequence[tuple[ParticipantExited, Headers]]) -> None:
        """End cover (or leave the waitlist) and hand freed places to those waiting."""
        ids = [ex.participant_id for ex, _ in exits]
        current = await self._held(ids)
        freed: set[FundingLine] = set()
        for ex, headers in exits:
            p = current.get(ex.participant_id)
            if p is None:
                raise LookupError("exit for a participant eligibility has not seen")
            places = self.places.get(p.funding_line.value) if p.funding_line else None
            if p.outcome in ("eligible", "waitlisted") and places is not None:
                if p.outcome == "eligible":
                    places.holders -= 1
                else:
                    places.waiting -= 1
                assert p.funding_line is not None
                freed.add(p.funding_line)
                p = self._decide(
                    p,
                    "exited",
                    rule_version=p.rule_version,
                    funding_line=p.funding_line,
                    cover_start=p.cover_start,
                    cover_end=ex.effective_date,
                    headers=headers,
                    exit_reason=ex.reason,
                )
            elif p.outcome != "exited":
                p = self._decide(
                    p,
                    "exited",
                    rule_version=p.rule_version,
                    funding_line=p.funding_line,
                    cover_end=ex.effective_date,
                    publish=False,  # never covered nor waiting: nothing changes downstream
                )
            current[p.participant_id] = p
        await self._give_back(freed)

    async def bpjs_answered(
        self, answers: Sequence[tuple[ParticipantBpjsAnswered, Headers]]
    ) -> None:
        """BPJS's answer to the registration. Already a member elsewhere: decided again as
        `ineligible` (ALREADY_BPJS_MEMBER), cover ended before it began, the place handed
        to those waiting. A KPJ whose cover starts on another day than the programme's:
        decided again `eligible` from BPJS's date (premium bills from it, the SMS says it).
        Another refusal changes no decision: the agency corrects the data."""
        ids = [a.participant_id for a, _ in answers]
        current = await self._held(ids)
        freed: set[FundingLine] = set()
        for a, headers in answers:
            p = current.get(a.participant_id)
            if p is None or p.funding_line is None or p.outcome not in ("eligible", "waitlisted"):
                continue  # refused, exited or unseen: nothing is held to give back or move
            places = self.places[p.funding_line.value]
            if a.answer == "ALREADY_BPJS_MEMBER":
                if p.outcome == "eligible":
                    places.holders -= 1
                else:
                    places.waiting -= 1
                freed.add(p.funding_line)
                start = p.cover_start
                p = self._decide(
                    p,
                    "ineligible",
                    rule_version=p.rule_version,
                    funding_line=p.funding_line,
                    reasons=[reason("ALREADY_BPJS_MEMBER")],
                    cover_start=start,
                    cover_end=start - timedelta(days=1) if start else None,
                    headers=headers,
                )
            elif (
                a.answer == "KPJ_ASSIGNED"
                and p.outcome == "eligible"
                and a.cover_start is not None
                and a.cover_start != p.cover_start
            ):
                p = self._decide(
                    p,
                    "eligible",
                    rule_version=p.rule_version,
                    funding_line=p.funding_line,
                    cover_start=a.cover_start,
                    headers=headers,
                )
            current[p.participant_id] = p
        await self._give_back(freed)

    async def promote(self, lines: Iterable[FundingLine]) -> None:
        """Fill free places from the waitlist (a quota raised, a funding window opened)."""
        wanted = sorted(set(lines))
        await self._lock(wanted)
        for line in wanted:
            await self._fill(line, [], self.today)
        await self._save_people()

    async def reevaluate(self, line: FundingLine, as_of: date) -> None:
        """Re-decide a line's participants under the rules in force on `as_of`; a decision
        only where the outcome changes. Cover that must end ends the day before `as_of`
        (published as `exited`, since downstream ends cover on that outcome)."""
        await self._lock([line])
        places = self.places[line.value]
        day = max(as_of, self.today)  # cover never starts in the past
        passing: list[tuple[Person, Assessment, Headers]] = []
        for p in await of_line(self.conn, line):
            if p.outcome == "eligible":
                a = assess(p.applicant, self.book, p.cover_start or day, as_of)
                if not a.passed:
                    places.holders -= 1
                    end = max(as_of - timedelta(days=1), p.cover_start or as_of)
                    self._decide(
                        p,
                        "exited",
                        state="ineligible",
                        rule_version=a.rule_version,
                        funding_line=line,
                        checks=a.checks,
                        reasons=a.reasons,
                        cover_start=p.cover_start,
                        cover_end=end,
                    )
            elif p.outcome == "waitlisted":
                a = assess(p.applicant, self.book, day, as_of)
                if not a.passed:
                    places.waiting -= 1
                    self._refuse(p, a)
            elif p.outcome == "ineligible":
                a = assess(p.applicant, self.book, day, as_of)
                if a.passed and a.funding_line == line:
                    passing.append((p, a, {}))
        await self._save_people()
        await self._fill(line, passing, day, as_of)
        await self._save_people()


def _quota_check(rule_set: RuleSet, day: date, holders: int) -> Check:
    """The quota as it stood when this person's place was decided."""
    quota = rule_set.quota_on(day)
    passed = holders < quota
    detail = f"kuota {day.year}: {quota}; terisi {holders} ({rule_set.label})"
    params = {"year": day.year, "quota": quota}
    return Check("QUOTA", passed, detail, None if passed else "QUOTA_FULL", params)
