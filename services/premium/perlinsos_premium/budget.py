"""Budget absorption and places: thresholds of the APBD allocation a commitment has crossed,
and what people billed beyond the places a year's allocation pays for cost.

When a line's quota falls at a year change (transport: 13,500 in 2025, 10,285 in 2026),
people holding a place keep their cover until they exit (no eviction) and eligibility
admits nobody new while holders are at or above the quota; premium keeps billing them
and tells finance how many are above the funded places and what that costs.
"""

from __future__ import annotations

from typing import Any

THRESHOLDS_PCT: tuple[int, ...] = (80, 100)


def crossed(
    allocation_idr: int, used_idr: int, thresholds: tuple[int, ...] = THRESHOLDS_PCT
) -> list[int]:
    """Every threshold (percent of the allocation) that `used_idr` has reached."""
    if allocation_idr <= 0:
        return []
    return [t for t in thresholds if used_idr * 100 >= allocation_idr * t]


def above_quota(participants: int, places: int | None) -> int:
    """People billed beyond the funded places (0 when the places are not known)."""
    return 0 if places is None else max(0, participants - places)


def above_quota_cost(contributions_idr: int, participants: int, above: int) -> int:
    """What `above` of `participants` cost out of the period's contributions (everyone on
    a line pays the same monthly rate, so the share is exact)."""
    if participants <= 0 or above <= 0:
        return 0
    return contributions_idr * above // participants


def places_fields(places: int | None, participants: int, contributions_idr: int) -> dict[str, Any]:
    """Funded places, people above them and their cost, as summaries and exports carry them."""
    above = above_quota(participants, places)
    return {
        "places_funded": places,
        "above_quota": above,
        "above_quota_idr": above_quota_cost(contributions_idr, participants, above),
    }
