"""The fault suite's table: one row per case, grouped by fault kind."""

from __future__ import annotations

from dataclasses import dataclass, field

from faults.harness import Fingerprint


@dataclass
class CaseResult:
    kind: str
    case: str
    size: int
    injections: int
    restarts: dict[str, int]
    resubmitted: int
    seconds: float
    counts: dict[str, int]
    differences: dict[str, str]
    sms_repeated: int
    extra_check: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not any(self.differences.values())
            and self.sms_repeated == 0
            and not self.extra_check
            and not self.notes
        )


RESULTS: list[CaseResult] = []


def result_of(
    kind: str,
    case: str,
    size: int,
    drive: object,
    end: Fingerprint,
    baseline: Fingerprint,
    extra_check: str = "",
) -> CaseResult:
    from faults.harness import Drive

    assert isinstance(drive, Drive)
    return CaseResult(
        kind=kind,
        case=case,
        size=size,
        injections=drive.injections,
        restarts=drive.restarts,
        resubmitted=drive.resubmitted,
        seconds=drive.seconds,
        counts=end.counts(),
        differences=end.differences(baseline),
        sms_repeated=end.sms_repeated,
        extra_check=extra_check,
        notes=list(drive.notes),
    )


COLUMNS = (
    "fault kind", "injections", "restarts", "resubm.", "participants", "decisions",
    "ledger rows", "summaries", "SMS", "SMS once", "vs fault-free", "s",
)  # fmt: skip


def _restarts(r: dict[str, int]) -> str:
    parts = [f"{k} {v}" for k, v in sorted(r.items()) if v]
    return ", ".join(parts) or "0"


def _cell(result: CaseResult, aspect: str) -> str:
    diff = result.differences.get(aspect, "")
    return f"{result.counts.get(aspect, 0):,}" + ("" if not diff else f" ({diff})")


def render_table(results: list[CaseResult]) -> list[str]:
    rows = [list(COLUMNS)]
    for r in sorted(results, key=lambda x: x.kind):
        verdict = "EQUAL" if r.passed else "DIFFERS"
        rows.append(
            [
                r.kind,
                f"{r.injections:,}",
                _restarts(r.restarts),
                f"{r.resubmitted:,}",
                _cell(r, "participants"),
                _cell(r, "decisions"),
                _cell(r, "ledger"),
                _cell(r, "summaries"),
                _cell(r, "sms"),
                "yes" if r.sms_repeated == 0 else f"NO ({r.sms_repeated} twice)",
                verdict,
                f"{r.seconds:.0f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    sep = "-+-".join("-" * w for w in widths)
    lines = [f"fault suite: {results[0].size:,} submissions per run, each compared with a "
             "fault-free run of the same submissions"]  # fmt: skip
    for i, row in enumerate(rows):
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append(sep)
    for r in results:
        for note in ([r.extra_check] if r.extra_check else []) + r.notes:
            lines.append(f"  {r.kind}: {note}")
    return lines
