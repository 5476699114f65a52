"""Budget absorption: which thresholds of the APBD allocation a commitment has crossed."""

from __future__ import annotations

THRESHOLDS_PCT: tuple[int, ...] = (80, 100)


def crossed(
    allocation_idr: int, used_idr: int, thresholds: tuple[int, ...] = THRESHOLDS_PCT
) -> list[int]:
    """Every threshold (percent of the allocation) that `used_idr` has reached."""
    if allocation_idr <= 0:
        return []
    return [t for t in thresholds if used_idr * 100 >= allocation_idr * t]
