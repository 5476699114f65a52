"""One table of figures and targets, printed and written into docs/benchmarks.md.

Only the part between the markers below is generated; every other section of the file
(the profile summary, older component figures) is written by hand and kept as it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BEGIN = "<!-- make bench: generated from here -->"
END = "<!-- make bench: generated up to here -->"

# Targets (issue 17): on 2 cores, embedded stack, tracing as shipped.
COHORT_TO_FLOOR = 0.40
MILLION_S = 7 * 60
LAST_TO_FIRST = 0.80
P99_AT_200_MS = 250
RSS_MB = 200
UP_S = 8.0
FLAT_RUN_S = 300.0  # "latency flat over a 5-minute run"
CLOSE_S = 10.0


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def _s(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.1f} s"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, met / MISSED)."""
    out: list[tuple[str, str, str, str]] = []
    floor, cohort = r.get("floor"), r.get("cohort")
    if floor:
        out.append(
            (
                f"floor: {floor['events']:,} JSON events, 4 bare aiokafka hops, COPY per batch",
                f"{_s(floor['seconds'])} ({floor['events_per_s']:,}/s)",
                "-",
                "-",
            )
        )
    if cohort:
        out.append(
            (
                f"cohort of {cohort['size']:,}: all decided / every SMS handed over",
                f"{_s(cohort['decided_s'])} / {_s(cohort['sms_s'])} ({cohort['people_per_s']:,}/s)",
                "-",
                "-",
            )
        )
    if floor and cohort:
        ratio = r["cohort_to_floor"]
        out.append(
            (
                "cohort / floor (floor time over cohort time to every SMS)",
                f"{ratio:.0%}",
                f">= {COHORT_TO_FLOOR:.0%}",
                _verdict(ratio >= COHORT_TO_FLOOR),
            )
        )
    m = r.get("million")
    if m:
        total = m.get("sms_s") or m.get("decided_s")
        out.append(
            (
                f"cohort of {m['people']:,}: all decided / every SMS",
                f"{_s(m.get('decided_s'))} / {_s(m.get('sms_s'))}",
                f"<= {MILLION_S / 60:.0f} min",
                _verdict(None if total is None else total <= MILLION_S and not m["timed_out"]),
            )
        )
        ratio = m.get("last_to_first_rate")
        rates = m.get("per_100k_rate_per_s") or []
        out.append(
            (
                "  rate of the last 100,000 / the first",
                f"{ratio:.0%} ({rates[-1]:,}/s vs {rates[0]:,}/s)" if ratio else "-",
                f">= {LAST_TO_FIRST:.0%}",
                _verdict(None if ratio is None else ratio >= LAST_TO_FIRST),
            )
        )
        seq = sorted(
            {t for h in m.get("hot_statements", []) for t in h["seq_scans_of_large_tables"]}
        )
        out.append(
            (
                "  sequential or whole-index scans of large tables in the hot statements' plans",
                ", ".join(seq) if seq else "none",
                "none",
                _verdict(not seq),
            )
        )
    for rate, lat in (r.get("latency") or {}).items():
        measured = (
            f"p50 {lat['p50_ms']:,} / p95 {lat['p95_ms']:,} / p99 {lat['p99_ms']:,} ms;"
            f" last SMS {lat['last_sms_after_last_publish_s']:.1f} s after the last publish"
            f" ({lat['sms']:,} of {lat['published']:,}, {lat['publish_s']:.0f} s)"
        )
        if float(rate) <= 200:
            target, ok = f"p99 <= {P99_AT_200_MS} ms", lat["p99_ms"] <= P99_AT_200_MS
        else:
            # the target is a flat latency over five minutes: a shorter run that kept up
            # shows nothing about it (a backlog in a short run is one in a long run too)
            target, ok = f"no backlog over {FLAT_RUN_S / 60:.0f} minutes", _no_backlog(lat)
            if ok and lat["publish_s"] < FLAT_RUN_S - 1:
                ok = None
                measured += (
                    f"; kept up, but a {FLAT_RUN_S / 60:.0f}-minute run (`--full`) judges it"
                )
        out.append(
            (f"latency at {rate}/s, publish to SMS at the provider", measured, target, _verdict(ok))
        )
    mem = r.get("memory") or {}
    if mem:
        worst = max(mem.items(), key=lambda kv: kv[1]["max_mb"])
        out.append(
            (
                "resident memory, highest of any service (all: see below)",
                f"{worst[1]['max_mb']:.0f} MB ({worst[0]})",
                f"<= {RSS_MB} MB each",
                _verdict(worst[1]["max_mb"] <= RSS_MB),
            )
        )
    up = r.get("startup") or {}
    if up:
        again = up.get("again_median_s")
        out.append(
            (
                "`perlinsos up` until every service is ready: fresh / again (median)",
                f"{_s(up['fresh_s'])} / {_s(again)}",
                f"<= {UP_S:.0f} s",
                _verdict(up["fresh_s"] <= UP_S),
            )
        )
    close = r.get("close")
    if close:
        out.append(
            (
                f"month close of {close['participants']:,} (billing every cover itself)",
                _s(close["close_unrolled_s"]),
                f"<= {CLOSE_S:.0f} s",
                _verdict(close["close_unrolled_s"] <= CLOSE_S),
            )
        )
    return out


def _no_backlog(lat: dict[str, Any]) -> bool:
    """Kept up: every SMS out within 5 s of the last publish, and the median of the last
    fifth of the run no more than 0.5 s above that of the first fifth."""
    fifths = lat.get("by_fifth") or []
    if lat["sms"] < lat["published"] or len(fifths) < 5:
        return False
    flat = fifths[-1]["p50_ms"] <= fifths[0]["p50_ms"] + 500
    return bool(flat and lat["last_sms_after_last_publish_s"] <= 5.0)


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="make bench")
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)
    for row in rows(r):
        table.add_row(*row)
    Console(width=200).print(table)


def markdown(r: dict[str, Any], command: str) -> str:
    m = r["machine"]
    lines = [
        BEGIN,
        "",
        f"Generated by `{command}` on {m['date']} at commit {m['commit']}: "
        f"{m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB RAM, load average "
        f"{' / '.join(str(x) for x in m['load_at_start'])} at the start and "
        f"{' / '.join(str(x) for x in m.get('load_at_end', []))} at the end; "
        f"{m['os']}, Python {m['python']}, PostgreSQL {m.get('postgresql', '-')} (embedded), "
        f"broker {m.get('broker', '-')} (embedded, in memory); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ". Tracing as shipped (every trace kept). Timings on a shared machine are noisy:"
        " compare ratios measured in one run, and medians of several runs.",
        "",
        "| figure | measured | target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    lines += _details(r)
    lines += ["", END]
    return "\n".join(lines)


def _details(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cohort = r.get("cohort")
    steady = {
        rate: f["cpu_s_per_1000"]
        for rate, f in (r.get("latency") or {}).items()
        if "cpu_s_per_1000" in f
    }
    if cohort:
        out += [
            "",
            f"CPU seconds per process during the cohort of {cohort['size']:,} (start-up"
            " excluded), per 1,000 people, and per 1,000 people during each steady run"
            " (smaller batches: fixed costs per poll, round and transaction weigh more):",
            "",
            "| process | CPU s | per 1,000 people |"
            + "".join(f" per 1,000 at {rate}/s |" for rate in steady)
            + "",
            "| --- | ---: | ---: |" + " ---: |" * len(steady),
        ]
        per = cohort["cpu_s_per_1000"]
        for name, sec in sorted(cohort["cpu_s"].items(), key=lambda kv: -kv[1]):
            extra = "".join(f" {f.get(name, 0):.3f} |" for f in steady.values())
            out.append(f"| {name} | {sec:.1f} | {per[name]:.3f} |{extra}")
        extra = "".join(f" {sum(f.values()):.3f} |" for f in steady.values())
        out.append(
            f"| all | {sum(cohort['cpu_s'].values()):.1f} | {sum(per.values()):.3f} |{extra}"
        )
    lat = r.get("latency") or {}
    if lat:
        out += [
            "",
            "Latency by fifth of each steady run (p50 / p99 ms, by time of publish: flat means"
            " no backlog builds):",
            "",
            "| rate | " + " | ".join(f"fifth {i}" for i in range(1, 6)) + " |",
            "| --- |" + " ---: |" * 5,
        ]
        for rate, f in lat.items():
            cells = [f"{x['p50_ms']:,} / {x['p99_ms']:,}" for x in f.get("by_fifth", [])]
            out.append(f"| {rate}/s | " + " | ".join(cells) + " |")
    mem = r.get("memory") or {}
    if mem:
        phases = list(dict.fromkeys(p for s in mem.values() for p in s["by_phase_end_mb"]))
        out += [
            "",
            "Resident memory per service (MB), sampled every second: highest, and at the end"
            " of each phase (notify is started again with the Twilio-wire provider before"
            " the latency runs):",
            "",
            "| service | highest | " + " | ".join(phases) + " |",
            "| --- | ---: |" + " ---: |" * len(phases),
        ]
        for name, s in mem.items():
            cells = [f"{s['by_phase_end_mb'].get(p, 0):.0f}" for p in phases]
            out.append(f"| {name} | {s['max_mb']:.0f} | " + " | ".join(cells) + " |")
    out += _tables(r.get("tables") or [], "after the cohort and the steady runs")
    m = r.get("million")
    if m:
        rates = m.get("per_100k_rate_per_s") or []
        out += [
            "",
            f"The cohort of {m['people']:,}: people decided or refused per second, per 100,000"
            f" (published in {m['published_s']:.0f} s):",
            "",
            "| " + " | ".join(f"{(i + 1) * 100}k" for i in range(len(rates))) + " |",
            "|" + " ---: |" * len(rates),
            "| " + " | ".join(f"{x:,}" for x in rates) + " |",
        ]
        out += _million_cpu(m, r.get("machine") or {})
        hot = m.get("hot_statements") or []
        if hot:
            out += [
                "",
                "The statements the services spent most time in over that run, and their plans"
                " at that size (generic plans; a sequential scan of a table over 10,000 rows,"
                " or an index scan of one with no index condition, is flagged):",
                "",
                "| service | statement | calls | ms per call | whole-table scans |",
                "| --- | --- | ---: | ---: | --- |",
            ]
            for h in hot:
                q = h["query"].replace("|", "\\|")[:160]
                seq = ", ".join(h["seq_scans_of_large_tables"]) or "none"
                out.append(
                    f"| {h['service']} | `{q}` | {h['calls']:,} | {h['ms_per_call']} | {seq} |"
                )
        out += _tables(m.get("large_tables") or [], "at the end of that run")
    close = r.get("close")
    if close:
        out += [
            "",
            f"Month close of {close['participants']:,} covers: close billing every cover"
            f" itself {close['close_unrolled_s']} s; month roll {close['roll_s']} s, then close"
            f" {close['close_rolled_s']} s; close again (nothing changes)"
            f" {close['close_again_s']} s.",
        ]
    timeline = (r.get("startup") or {}).get("last_timeline")
    if timeline:
        out += [
            "",
            "The last `perlinsos up` step by step (its `logs/startup.log`: seconds since the"
            " command started):",
            "",
            "```",
            *timeline,
            "```",
        ]
    two = r.get("two_instances")
    if two:
        out += [
            "",
            f"Two instances of every service (fresh stack, the same cohort): every SMS after"
            f" {two['sms_s']} s; CPU s per 1,000 people: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(two["cpu_s_per_1000"].items())),
        ]
    return out


def _million_cpu(m: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    """CPU seconds per process over the 1,000,000 and what the 7-minute target leaves."""
    cpu = m.get("cpu_s") or {}
    if not cpu:
        return []
    per = m["cpu_s_per_1000"]
    cores = machine.get("cores") or 0
    budget = MILLION_S * cores * 1000 / m["people"] if cores else None
    wall = m.get("sms_s") or m.get("decided_s")
    out = [
        "",
        f"CPU seconds per process over that run (until every SMS, or the time limit), and per"
        f" 1,000 people"
        f" ({sum(cpu.values()):,.0f} CPU s in {_s(wall)}: {m['cores_busy']} cores busy on"
        f" average):",
        "",
        "| process | CPU s | per 1,000 people |",
        "| --- | ---: | ---: |",
    ]
    for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
        out.append(f"| {name} | {sec:,.1f} | {per[name]:.3f} |")
    out.append(f"| all | {sum(cpu.values()):,.1f} | {sum(per.values()):.3f} |")
    wal = m.get("wal")
    if wal:
        n = m["people"]
        out += [
            "",
            f"PostgreSQL wrote {wal['bytes'] / 1e9:,.1f} GB of WAL over that run"
            f" ({wal['bytes'] / n:,.0f} bytes and {wal['full_page_images'] / n:.2f} full-page"
            f" images per person), with {wal['checkpoints']} checkpoints.",
        ]
    if budget:
        out += [
            "",
            f"{m['people']:,} people in {MILLION_S / 60:.0f} minutes on {cores} cores leaves"
            f" {budget:.3f} CPU s per 1,000 people, everything on the machine included.",
        ]
    return out


def _tables(tables: list[dict[str, Any]], when: str) -> list[str]:
    if not tables:
        return []
    out = [
        "",
        f"Tables {when} (over 1,000 rows), with PostgreSQL's count of sequential and index"
        " scans since the stack started, and their size with indexes:",
        "",
        "| table | rows | sequential scans | rows read by them | index scans | MB | bytes per row |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tables:
        size = t.get("bytes", 0)
        out.append(
            f"| {t['table']} | {t['rows']:,} | {t['seq_scans']:,} | {t['rows_read_by_seq_scans']:,}"
            f" | {t['index_scans']:,} | {size / 2**20:,.1f} | {size // max(1, t['rows']):,} |"
        )
    return out


def write_markdown(path: Path, generated: str) -> None:
    """Replace the generated part of `path` (or put it after the first heading)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + generated + tail
    else:
        first, _, rest = text.partition("\n")
        text = f"{first}\n\n{generated}\n{rest}"
    path.write_text(text, encoding="utf-8")
