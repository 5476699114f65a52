"""Cover periods from eligibility decisions: pure, one participant at a time.

A participant's covers are kept in start order. Rules:

- `eligible` with a cover start: a cover with that start already known is a repeat
  (a redelivery under another id, or a replay) and changes nothing, not even an end
  set since; an open latest cover is corrected to the new start and line; otherwise
  (no cover, or the latest has ended) a new cover begins. A promotion from the waitlist
  is an `eligible` decision like any other: it starts cover.
- `exited` with a cover end: ends the latest cover on that date (the exit's effective
  date). An exit dated before the cover start leaves a cover billed for no month. An
  exit of someone never covered (refused, still waitlisted) changes nothing.
- `ineligible` and `waitlisted` never touch an existing cover, except an `ineligible`
  with a cover end (BPJS refused the registration: already a member elsewhere), which
  ends the latest cover like an exit: dated before its start, it bills no month.

`billed_months` applies the billing rule to every cover; where two covers share a
month (re-enrolment in the month of an exit) the later cover's funding line bills it,
once: one person is funded by one line only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from perlinsos_premium.billing import billed_periods


@dataclass(frozen=True)
class Cover:
    funding_line: str
    cover_start: date
    cover_end: date | None = None


@dataclass(frozen=True)
class Decision:
    """The parts of an eligibility decision that matter for cover."""

    outcome: str
    funding_line: str | None
    cover_start: date | None
    cover_end: date | None


Covers = tuple[Cover, ...]


def apply_decision(covers: Covers, d: Decision) -> Covers:
    if d.outcome == "eligible" and d.funding_line and d.cover_start:
        if any(c.cover_start == d.cover_start for c in covers):
            return covers
        latest = covers[-1] if covers else None
        if latest is not None and latest.cover_end is None:
            fixed = Cover(d.funding_line, d.cover_start)
            return _ordered((*covers[:-1], fixed))
        return _ordered((*covers, Cover(d.funding_line, d.cover_start)))
    if d.outcome in ("exited", "ineligible") and d.cover_end and covers:
        latest = covers[-1]
        if latest.cover_end == d.cover_end:
            return covers
        return (*covers[:-1], replace(latest, cover_end=d.cover_end))
    return covers


def _ordered(covers: Covers) -> Covers:
    return tuple(sorted(covers, key=lambda c: c.cover_start))


def billed_months(covers: Covers, through: date) -> dict[str, str]:
    """Period -> funding line for every month billed to this participant up to `through`."""
    out: dict[str, str] = {}
    for c in covers:  # in start order: a later cover's line wins a shared month
        for period in billed_periods(c.cover_start, c.cover_end, through):
            out[period] = c.funding_line
    return out
