"""The Perwako rule sets: versioned data per funding line, and choosing the one in force.

Each rule set is a YAML file `rule_data/<FUNDING-LINE>/<version>.yaml` (see the README
beside them). A rule set is in force from its `in_force_from` date until the next version
of the same line takes over. Parsing (`parse_rule_set`) and choosing (`RuleBook`) are
pure; only `load_rule_book` reads files.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from perlinsos_shared.events import FundingLine, Occupation

PACKAGED_RULES = "perlinsos_eligibility.rule_data"


class RuleDataError(ValueError):
    """A rule data file that cannot be used (the service refuses to start on it)."""


@dataclass(frozen=True)
class FundingYear:
    """What the city funds on one line in one fiscal year (a calendar year)."""

    quota: int
    funded_months: frozenset[int]


@dataclass(frozen=True)
class RuleSet:
    """One version of one funding line's rules."""

    funding_line: FundingLine
    version: str
    regulation: str
    in_force_from: date
    occupations: frozenset[Occupation]
    min_age: int
    max_age_exclusive: int
    batam_domicile: bool
    exclude_bpjs_tk_members: bool
    funding: Mapping[int, FundingYear] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The version as decisions carry it: `PERWAKO-30-2025@2026.1`."""
        return f"{self.funding_line.value}@{self.version}"

    def funding_for(self, day: date) -> FundingYear | None:
        return self.funding.get(day.year)

    def quota_on(self, day: date) -> int:
        """Places funded in the fiscal year of `day` (0 when this set funds none)."""
        year = self.funding_for(day)
        return year.quota if year is not None else 0

    def funded_on(self, day: date) -> bool:
        """Whether cover may start on `day`: in force and inside a funded month."""
        year = self.funding_for(day)
        return day >= self.in_force_from and year is not None and day.month in year.funded_months

    def next_funded_day(self, day: date) -> date | None:
        """The first day on or after `day` on which this set funds a cover start."""
        if self.funded_on(day):
            return day
        for year in sorted(y for y in self.funding if y >= day.year):
            for month in sorted(self.funding[year].funded_months):
                first = max(date(year, month, 1), self.in_force_from)
                last = date(year, month, calendar.monthrange(year, month)[1])
                if first <= last and last >= day:
                    return max(first, day)
        return None


@dataclass(frozen=True)
class RuleBook:
    """Every version of every line; chooses the one in force on a date."""

    sets: tuple[RuleSet, ...]

    def __post_init__(self) -> None:
        # memo of the date lookups (hot: one per decision); the book itself never changes
        object.__setattr__(self, "_in_force", {})
        object.__setattr__(self, "_line_of", {})
        seen: set[tuple[FundingLine, date]] = set()
        for s in self.sets:
            if (s.funding_line, s.in_force_from) in seen:
                raise RuleDataError(
                    f"two {s.funding_line.value} rule sets in force from {s.in_force_from}"
                )
            seen.add((s.funding_line, s.in_force_from))

    def versions(self, line: FundingLine) -> list[RuleSet]:
        return sorted(
            (s for s in self.sets if s.funding_line == line), key=lambda s: s.in_force_from
        )

    def lines(self) -> list[FundingLine]:
        return sorted({s.funding_line for s in self.sets})

    def in_force(self, line: FundingLine, day: date) -> RuleSet | None:
        """The latest version in force on `day`; before the first version, the first one
        (its criteria apply, but it funds nothing before it comes into force)."""
        memo: dict[tuple[FundingLine, date], RuleSet | None] = self._in_force  # type: ignore[attr-defined]
        key = (line, day)
        if key not in memo:
            memo[key] = self._choose(line, day)
        return memo[key]

    def _choose(self, line: FundingLine, day: date) -> RuleSet | None:
        versions = self.versions(line)
        if not versions:
            return None
        chosen = versions[0]
        for s in versions:
            if s.in_force_from <= day:
                chosen = s
        return chosen

    def in_force_until(self, rule_set: RuleSet) -> date | None:
        """The last day `rule_set` is in force (None: until a later version is added)."""
        later = [
            s.in_force_from
            for s in self.versions(rule_set.funding_line)
            if s.in_force_from > rule_set.in_force_from
        ]
        return date.fromordinal(min(later).toordinal() - 1) if later else None

    def line_of(self, occupation: Occupation, day: date) -> FundingLine | None:
        memo: dict[tuple[Occupation, date], FundingLine | None] = self._line_of  # type: ignore[attr-defined]
        key = (occupation, day)
        if key not in memo:
            memo[key] = self._line_for(occupation, day)
        return memo[key]

    def _line_for(self, occupation: Occupation, day: date) -> FundingLine | None:
        for line in self.lines():
            rule_set = self.in_force(line, day)
            if rule_set is not None and occupation in rule_set.occupations:
                return line
        return None

    def by_label(self, label: str) -> RuleSet | None:
        return next((s for s in self.sets if s.label == label), None)


def _as_date(value: Any, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise RuleDataError(f"{what}: not a date: {value!r}") from exc


def parse_rule_set(raw: Mapping[str, Any], source: str = "<data>") -> RuleSet:
    """One rule set from its parsed YAML; every problem is a `RuleDataError`."""
    try:
        line = FundingLine(raw["funding_line"])
        age = raw["age"]
        min_age = int(age["min_years"])
        max_age = int(age["max_years_exclusive"])
        funding: dict[int, FundingYear] = {}
        for year, spec in (raw.get("funding") or {}).items():
            months = frozenset(int(m) for m in spec["funded_months"])
            if not months <= set(range(1, 13)):
                raise RuleDataError(f"{source}: funded_months outside 1..12 in {year}")
            quota = int(spec["quota"])
            if quota < 0:
                raise RuleDataError(f"{source}: negative quota in {year}")
            funding[int(year)] = FundingYear(quota=quota, funded_months=months)
        rule_set = RuleSet(
            funding_line=line,
            version=str(raw["version"]),
            regulation=str(raw.get("regulation", line.value)),
            in_force_from=_as_date(raw["in_force_from"], f"{source}: in_force_from"),
            occupations=frozenset(Occupation(o) for o in raw["occupations"]),
            min_age=min_age,
            max_age_exclusive=max_age,
            batam_domicile=bool(raw.get("batam_domicile", True)),
            exclude_bpjs_tk_members=bool(raw.get("exclude_bpjs_tk_members", True)),
            funding=funding,
        )
    except RuleDataError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RuleDataError(f"{source}: {type(exc).__name__}: {exc}") from exc
    if not 0 <= min_age < max_age:
        raise RuleDataError(f"{source}: age bounds {min_age}..{max_age} make no sense")
    return rule_set


def build_rule_book(documents: Iterable[tuple[str, Mapping[str, Any]]]) -> RuleBook:
    sets = [parse_rule_set(raw, source) for source, raw in documents]
    claimed: dict[tuple[Occupation, date], FundingLine] = {}
    for s in sets:
        for occupation in s.occupations:
            other = claimed.setdefault((occupation, s.in_force_from), s.funding_line)
            if other != s.funding_line:
                raise RuleDataError(f"{occupation} funded by both {other} and {s.funding_line}")
    return RuleBook(tuple(sets))


def _yaml_files(root: Traversable) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for line_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not line_dir.is_dir() or line_dir.name.startswith(("_", ".")):
            continue
        for f in sorted(line_dir.iterdir(), key=lambda p: p.name):
            if f.name.endswith((".yaml", ".yml")):
                out.append((f"{line_dir.name}/{f.name}", yaml.safe_load(f.read_text("utf-8"))))
    return out


@lru_cache(maxsize=4)
def load_rule_book(directory: Path | None = None) -> RuleBook:
    """The rule sets in `directory` (laid out like `rule_data/`), else the packaged ones."""
    root: Traversable = directory if directory is not None else resources.files(PACKAGED_RULES)
    documents = _yaml_files(root)
    if not documents:
        raise RuleDataError(f"no rule sets found in {root}")
    return build_rule_book(documents)
