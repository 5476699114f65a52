"""What the ledger must change for one participant: pure, from wanted vs. already billed.

The wanted months come from the covers (`covers.billed_months`) priced by the rate table.
What is already billed for a (period, line) is the ledger row plus every adjustment
carried for it. An open month is corrected in place (a ledger row added or removed);
a closed month never changes: the difference becomes an adjustment booked in the first
open month of that line after it, listed per participant.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from perlinsos_premium.billing import next_period
from perlinsos_premium.rates import RateTable

Key = tuple[str, str]  # (period, funding_line)
Amount = tuple[int, int]  # (jkk_idr, jkm_idr)


@dataclass(frozen=True)
class LedgerRow:
    participant_id: str
    period: str
    funding_line: str
    jkk_idr: int
    jkm_idr: int


@dataclass(frozen=True)
class Adjustment:
    participant_id: str
    for_period: str
    funding_line: str
    booked_period: str
    jkk_idr: int
    jkm_idr: int
    reason: str

    @property
    def amount_idr(self) -> int:
        return self.jkk_idr + self.jkm_idr


@dataclass
class Changes:
    add: list[LedgerRow] = field(default_factory=list)
    remove: list[LedgerRow] = field(default_factory=list)
    adjust: list[Adjustment] = field(default_factory=list)

    def extend(self, other: Changes) -> None:
        self.add += other.add
        self.remove += other.remove
        self.adjust += other.adjust

    def __bool__(self) -> bool:
        return bool(self.add or self.remove or self.adjust)


def first_open_period(funding_line: str, period: str, closed: Set[Key]) -> str:
    """The first month after `period` that is not closed for the line."""
    p = next_period(period)
    while (p, funding_line) in closed:
        p = next_period(p)
    return p


def plan(
    participant_id: str,
    wanted: Mapping[str, str],
    ledger: Mapping[Key, Amount],
    adjusted: Mapping[Key, Amount],
    closed: Set[Key],
    rates: RateTable,
) -> Changes:
    """Changes that make what is billed equal what is wanted.

    wanted: period -> funding line; ledger: the participant's ledger rows;
    adjusted: adjustments already carried per (for_period, line); closed: closed months.
    """
    want: dict[Key, Amount] = {
        (period, line): rates.monthly(line, period) for period, line in wanted.items()
    }
    out = Changes()
    for key in sorted(set(want) | set(ledger) | set(adjusted)):
        period, line = key
        target = want.get(key, (0, 0))
        if key in closed:
            row = ledger.get(key, (0, 0))
            adj = adjusted.get(key, (0, 0))
            djkk = target[0] - row[0] - adj[0]
            djkm = target[1] - row[1] - adj[1]
            if djkk or djkm:
                out.adjust.append(
                    Adjustment(
                        participant_id,
                        period,
                        line,
                        first_open_period(line, period, closed),
                        djkk,
                        djkm,
                        "KOREKSI_TAMBAH" if djkk + djkm > 0 else "KOREKSI_KURANG",
                    )
                )
            continue
        have = ledger.get(key)
        if have == target:
            continue
        if have is not None:
            out.remove.append(LedgerRow(participant_id, period, line, *have))
        if key in want:
            out.add.append(LedgerRow(participant_id, period, line, *target))
    return out
