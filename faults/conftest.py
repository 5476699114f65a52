"""Options of the fault suite and the table it prints at the end."""

from __future__ import annotations

import os

import pytest

from faults.report import RESULTS, render_table


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "fault suite")
    group.addoption(
        "--faults-size",
        type=int,
        default=int(os.environ.get("FAULTS_SIZE", "5000")),
        help="submissions per run (env FAULTS_SIZE; default 5000)",
    )
    group.addoption(
        "--faults-rate",
        type=float,
        default=float(os.environ.get("FAULTS_RATE", "50")),
        help="submissions per second during a run (env FAULTS_RATE; default 50)",
    )
    group.addoption(
        "--faults-short",
        action="store_true",
        default=os.environ.get("FAULTS_SHORT") == "1",
        help="only the cases marked short (env FAULTS_SHORT=1)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_line("")
        for line in render_table(RESULTS):
            terminalreporter.write_line(line)
