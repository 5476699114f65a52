"""`perlinsos cohort` (what `make run` runs) at a small size: the per-funding-line report
against an expectation the generator gives independently of the services.

Real: the command as a process, starting its own embedded broker, PostgreSQL and the four
services, exactly as `make run` does (only the size, seed and ports differ). Expected, from
the cohort alone: per line, every submission without a fault eligible and billed
Rp16,800 this month; a fault that eligibility judges (age, domicile, BPJS membership)
decided ineligible and answered by SMS; every other fault refused at intake (no decision,
no SMS); nobody waitlisted (a small cohort is far below every quota).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest

from perlinsos_devruntime.cohort import FUNDING_LINE_BY_OCCUPATION, generate_cohort
from perlinsos_devruntime.embedded import free_port, free_port_block
from perlinsos_eligibility.reasons import DecisionCode
from perlinsos_shared.events import FundingLine

pytestmark = pytest.mark.flow

SIZE, SEED, FAULT_RATE = 240, 31, 0.15


def idr(amount: int) -> str:
    return "Rp" + f"{amount:,}".replace(",", ".")


def test_make_run_reports_each_funding_line_as_the_cohort_expects(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env |= {"PERLINSOS_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "250"}
    run = subprocess.run(
        [sys.executable, "-m", "perlinsos_cli.main", "cohort", "--size", str(SIZE),
         "--seed", str(SEED), "--fault-rate", str(FAULT_RATE), "--timeout", "240",
         "--kafka-port", str(free_port()), "--pg-port", str(free_port()),
         "--http-port", str(free_port_block(4))],
        env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    shown = {
        cells[0]: cells[1:]
        for line in run.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("│") if c.strip()])
        and cells[0] in {*FundingLine, "TOTAL"}
    }

    judged_by_eligibility = set(get_args(DecisionCode))
    expected: dict[str, list[str]] = {}
    for line in FundingLine:
        subs = [
            s for s in generate_cohort(size=SIZE, seed=SEED, fault_rate=FAULT_RATE)
            if FUNDING_LINE_BY_OCCUPATION[s.data["occupation"]] == line
        ]  # fmt: skip
        faults = Counter(s.fault for s in subs)
        clean = faults[None]
        decided = clean + sum(n for f, n in faults.items() if f in judged_by_eligibility)
        # submitted, enrolled, eligible, waitlisted, refused, billed, liability, ledger, SMS
        expected[line.value] = [
            f"{len(subs):,}", f"{decided:,}", f"{clean:,}", "0", f"{len(subs) - clean:,}",
            f"{clean:,}", idr(16_800 * clean), "= summary", f"{decided:,}",
        ]  # fmt: skip
        assert clean and len(subs) > clean, (line, faults)  # both kinds on every line
    assert {k: v for k, v in shown.items() if k != "TOTAL"} == expected, run.stdout
    total = sum(16_800 * int(v[2].replace(",", "")) for v in expected.values())
    assert shown["TOTAL"][:1] == [f"{SIZE:,}"] and idr(total) in shown["TOTAL"], run.stdout
    assert "stopped" in run.stdout
