"""The benchmark report (no broker, no database, no timing): the targets it judges and the
hand-written sections of docs/benchmarks.md it must keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import latency, report


def _results() -> dict[str, Any]:
    sent = {latency.phone(i): 1000.0 + i * 0.01 for i in range(500)}
    arrived = {p: t + 0.1 for p, t in sent.items()}
    return {
        "machine": {
            "date": "2026-11-28 12:00 UTC", "commit": "abc1234", "cores": 2,
            "cpu_model": "x", "ram_gib": 23.5, "load_at_start": [0.1, 0.2, 0.3],
            "load_at_end": [1.0, 1.0, 1.0], "os": "Linux", "python": "3.11",
            "versions": {"aiokafka": "0.14"},
        },
        "floor": {"events": 1000, "hops": 4, "seconds": 1.0, "events_per_s": 1000},
        "cohort": {
            "size": 1000, "decided_s": 2.0, "sms_s": 2.5, "settled_s": 2.6,
            "people_per_s": 400, "cpu_s": {"registry": 1.0}, "cpu_s_per_1000": {"registry": 1.0},
        },
        "cohort_to_floor": 0.4,
        "latency": {"200": latency.summarise(sent, arrived, 200, 5.0, 1005.0)},
        "memory": {"registry": {"max_mb": 210.0, "end_mb": 150.0, "by_phase_end_mb": {"cohort": 150.0}}},
        "startup": {"fresh_s": 7.5, "again_s": [5.0], "again_median_s": 5.0},
    }  # fmt: skip


def test_each_target_is_judged_from_the_figures() -> None:
    verdicts = {row[0].split(":")[0]: row[3] for row in report.rows(_results())}
    assert verdicts["cohort / floor (floor time over cohort time to every SMS)"] == "met"
    assert verdicts["latency at 200/s, publish to SMS at the provider"] == "met"
    assert verdicts["resident memory, highest of any service (all"] == "MISSED"
    assert verdicts["`perlinsos up` until every service is ready"] == "met"


def test_no_backlog_at_1000_is_judged_only_over_five_minutes() -> None:
    """A 90 s run that kept up is not judged; one that did not is a miss however short."""

    def verdict(seconds: float, lag_s: float) -> str:
        n = int(1000 * seconds)
        sent = {latency.phone(i): 1000.0 + i / 1000 for i in range(n)}
        arrived = {p: t + 0.5 + lag_s * (t - 1000.0) / seconds for p, t in sent.items()}
        results = _results()
        results["latency"] = {
            "1000": latency.summarise(sent, arrived, 1000, seconds, max(sent.values()))
        }
        return {row[0]: row[3] for row in report.rows(results)}[
            "latency at 1000/s, publish to SMS at the provider"
        ]

    assert verdict(90, lag_s=0.0) == "-"
    assert verdict(300, lag_s=0.0) == "met"
    assert verdict(90, lag_s=8.0) == "MISSED"
    assert verdict(300, lag_s=8.0) == "MISSED"


def test_latency_is_measured_from_publish_to_the_provider() -> None:
    lat = latency.summarise(
        {"+a": 10.0, "+b": 10.0, "+c": 11.0}, {"+a": 10.2, "+b": 10.4}, 2, 1.0, 11.0
    )
    assert (lat["published"], lat["sms"]) == (3, 2)
    assert lat["p50_ms"] == 200 and lat["max_ms"] == 400


def test_only_the_generated_part_is_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold table\n{report.END}\n\n"
        "## Where the time goes\n\nwritten by hand\n"
    )
    report.write_markdown(doc, report.markdown(_results(), "make bench"))
    text = doc.read_text()
    assert "old table" not in text
    assert "intro" in text and "written by hand" in text
    assert text.count(report.BEGIN) == 1 and "| cohort / floor" in text


def test_the_million_shows_its_cpu_against_what_seven_minutes_leave() -> None:
    """1,000,000 in 7 minutes on 2 cores is 840 CPU s: 0.840 per 1,000 people."""
    results = _results()
    results["million"] = {
        "people": 1_000_000, "published_s": 200.0, "decided_s": 790.0, "sms_s": 930.0,
        "per_100k_rate_per_s": [1000, 1100], "last_to_first_rate": 1.1, "timed_out": False,
        "cpu_s": {"registry": 500.0, "notify": 700.0},
        "cpu_s_per_1000": {"registry": 0.5, "notify": 0.7}, "cores_busy": 1.29,
        "wal": {"bytes": 15_000_000_000, "records": 1, "full_page_images": 2_500_000,
                "checkpoints": 9},
    }  # fmt: skip
    text = report.markdown(results, "make bench")
    assert "| notify | 700.0 | 0.700 |" in text
    assert "| all | 1,200.0 | 1.200 |" in text
    assert "1.29 cores busy" in text
    assert "leaves 0.840 CPU s per 1,000 people" in text
    assert "15.0 GB of WAL" in text and "2.50 full-page images per person" in text
    verdicts = {row[0]: row[3] for row in report.rows(results)}
    assert verdicts["cohort of 1,000,000: all decided / every SMS"] == "MISSED"


def test_a_whole_index_read_in_a_plan_is_flagged_like_a_sequential_scan() -> None:
    """The relay's batch before it read each row by key: a merge join whose outbox side
    was an index scan with no condition (the whole outbox, in id order)."""
    from benchmarks.explain import whole_scans

    merge = {
        "Node Type": "Merge Join",
        "Plans": [
            {"Node Type": "Index Scan", "Relation Name": "outbox_pending", "Index Cond": "x"},
            {"Node Type": "Index Scan", "Relation Name": "outbox"},
        ],
    }
    lookup = {
        "Node Type": "Nested Loop",
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "outbox_hold"},
            {"Node Type": "Index Scan", "Relation Name": "outbox", "Index Cond": "(id = p.id)"},
        ],
    }
    assert whole_scans(merge) == [("Index Scan", "outbox")]
    assert whole_scans(lookup) == [("Seq Scan", "outbox_hold")]
