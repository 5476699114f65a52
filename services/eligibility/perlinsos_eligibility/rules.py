"""Loading the Perwako rule data (YAML in `rules/`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources

import yaml

from perlinsos_shared.events import FundingLine, Occupation


@dataclass(frozen=True)
class RuleSet:
    version: str
    in_force_from: date
    min_age: int
    max_age_exclusive: int
    line_of: dict[Occupation, FundingLine]


@lru_cache(maxsize=1)
def load_rules() -> RuleSet:
    raw = yaml.safe_load(
        resources.files("perlinsos_eligibility.rule_data")
        .joinpath("perwako.yaml")
        .read_text("utf-8")
    )
    line_of = {
        Occupation(occ): FundingLine(line)
        for line, spec in raw["lines"].items()
        for occ in spec["occupations"]
    }
    return RuleSet(
        version=str(raw["version"]),
        in_force_from=raw["in_force_from"],
        min_age=int(raw["age"]["min_years"]),
        max_age_exclusive=int(raw["age"]["max_years_exclusive"]),
        line_of=line_of,
    )
