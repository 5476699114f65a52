"""Each fault case against a fault-free run of the same submissions (`make test-faults`).

Equal means: the same submissions answered the same way, the same participants,
decisions, ledger rows and summaries, the same SMS handed to the provider, and no SMS
handed over twice. The table printed at the end has one row per case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.cases import CASE_IDS, CASES, FaultCase
from faults.harness import FaultRun, Fingerprint, cohort, drive
from faults.report import RESULTS, result_of
from perlinsos_devruntime.cohort import Submission

pytestmark = [pytest.mark.faults, pytest.mark.timeout(3600)]

SEED = 2025


@pytest.fixture(scope="session")
def submissions(request: pytest.FixtureRequest) -> list[Submission]:
    return cohort(int(request.config.getoption("--faults-size")), SEED)


@pytest.fixture(scope="session")
def rate(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--faults-rate"))


@pytest.fixture(scope="session")
async def fault_free(
    submissions: list[Submission], rate: float, tmp_path_factory: pytest.TempPathFactory
) -> Fingerprint:
    """The end state of the same submissions with no fault injected."""
    async with FaultRun(tmp_path_factory.mktemp("fault-free")) as run:
        result = await drive(run, submissions, rate)
    assert result.end is not None and not result.notes, result.notes
    assert result.end.sms_repeated == 0
    return result.end


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_fault_ends_as_the_fault_free_run(
    case: FaultCase,
    submissions: list[Submission],
    rate: float,
    fault_free: Fingerprint,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if request.config.getoption("--faults-short") and not case.short:
        pytest.skip("not in the short suite")
    async with FaultRun(tmp_path, sms_provider=case.sms_provider, extra_env=case.env) as run:
        result = await drive(run, submissions, rate, case.inject, target=fault_free)
        assert result.end is not None
        extra = await case.check(run, result.injections) if case.check else ""
    outcome = result_of(
        case.kind, case.name, len(submissions), result, result.end, fault_free, extra
    )
    RESULTS.append(outcome)
    assert result.injections > 0, "the fault was never injected"
    assert outcome.passed, (outcome.differences, outcome.sms_repeated, extra, result.notes)
