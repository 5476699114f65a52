"""Which agency may submit which occupation: configurable, with the programme's default."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from perlinsos_shared.events import Occupation

ANY = "*"

DEFAULT_MAP: dict[str, list[str]] = {
    "DISNAKER": [ANY],
    "DISHUB": ["OJEK_DARING", "BECAK", "BOAT_PANCUNG"],
    "PERIKANAN": ["NELAYAN"],
    "KELURAHAN": ["KETUA_RT", "KETUA_RW", "KADER_POSYANDU", "KADER_SIAGA", "KETUA_LPM"],
}


@dataclass(frozen=True)
class AgencyPolicy:
    allowed: dict[str, frozenset[str]]

    def allows(self, agency: str, occupation: Occupation) -> bool:
        occupations = self.allowed.get(agency)
        if occupations is None:
            return False
        return ANY in occupations or occupation.value in occupations

    def is_known(self, agency: str) -> bool:
        return agency in self.allowed

    @classmethod
    def from_mapping(cls, mapping: dict[str, list[str]]) -> AgencyPolicy:
        return cls({k: frozenset(v) for k, v in mapping.items()})

    @classmethod
    def load(cls) -> AgencyPolicy:
        """`PERLINSOS_AGENCY_MAP` may name a JSON file `{agency: [occupation | "*"]}`."""
        path = os.environ.get("PERLINSOS_AGENCY_MAP")
        if path:
            return cls.from_mapping(json.loads(Path(path).read_text(encoding="utf-8")))
        return cls.from_mapping(DEFAULT_MAP)
