"""The opt-in memory report: off by default, and what it writes when on."""

from __future__ import annotations

from pathlib import Path

import pytest

from perlinsos_shared import memdiag


def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memdiag.ENV_EVERY, raising=False)
    assert memdiag.enabled() is None
    monkeypatch.setenv(memdiag.ENV_EVERY, "30")
    assert memdiag.enabled() == 30.0


def test_report_without_tracing(tmp_path: Path) -> None:
    reporter = memdiag.Reporter("premium", tmp_path)
    text = reporter.report()
    assert text.startswith("== t=")
    assert "rss=" in text and "gc_objects=" in text
    if memdiag.malloc_stats():  # glibc
        assert "malloc_free=" in text
    assert reporter.path.parent == tmp_path / "memory"
    assert reporter.path.read_text() == text
