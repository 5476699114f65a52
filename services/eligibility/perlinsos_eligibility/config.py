"""Settings only eligibility reads (environment variables, pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from perlinsos_eligibility.rules import RuleBook, load_rule_book


class EligibilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # A folder laid out like the packaged `rule_data/` replaces the packaged rule sets.
    rules_dir: Path | None = Field(default=None, alias="PERLINSOS_ELIGIBILITY_RULES_DIR")
    # How often each instance looks for free places to give to the waitlist (a quota
    # raised in the rule data, a funding window that opened, a new fiscal year).
    promote_interval_s: float = Field(
        default=60.0, alias="PERLINSOS_ELIGIBILITY_PROMOTE_INTERVAL_S"
    )


def rule_book() -> RuleBook:
    return load_rule_book(EligibilitySettings().rules_dir)
