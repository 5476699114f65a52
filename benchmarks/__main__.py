"""`make bench` (BENCH_ARGS="..."): the whole benchmark in one run, or one component."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import shlex
import signal
import sys
from pathlib import Path

import benchmarks
from benchmarks import report, suite

DOC = Path("docs/benchmarks.md")
RAW = Path("docs/benchmarks.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Every figure of docs/benchmarks.md in one run on one embedded stack.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and short runs (a smoke run of a few minutes)",
    )
    parser.add_argument(
        "--size",
        type=int,
        help="people in the cohort and events in the floor (default 24,300; --quick 2,000)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="length of each steady-rate run (default 90; --quick 15)",
    )
    parser.add_argument(
        "--full", action="store_true", help="5-minute steady-rate runs (as the targets are stated)"
    )
    parser.add_argument("--rates", default="200,1000", help="steady rates per second")
    parser.add_argument(
        "--million",
        nargs="?",
        type=int,
        const=1_000_000,
        default=0,
        metavar="N",
        help="also the cohort at N (default 1,000,000) with its"
        " rate per 100,000 and the plans of the hot statements",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="the longest each cohort may take, in seconds (default 1,800; the 1,000,000"
        " cohort took 1,963 s on a loaded 2-core machine)",
    )
    parser.add_argument(
        "--close-size",
        type=int,
        help="covers in the month close (default 1,000,000; --quick 100,000)",
    )
    parser.add_argument(
        "--startups", type=int, help="times `perlinsos up` is started (default 3; --quick 1)"
    )
    parser.add_argument(
        "--two-instances",
        action="store_true",
        help="the cohort again with two instances of every service",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DOC.parent,
        metavar="DIR",
        help="where benchmarks.md and benchmarks.json are written (default docs; another"
        " folder starts from a copy of docs/benchmarks.md)",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print only; leave docs/benchmarks.md and .json alone",
    )
    parser.add_argument(
        "--part",
        action="append",
        default=[],
        metavar="NAME",
        help="run only a component benchmark instead ("
        + ", ".join(_parts())
        + "); writes docs/benchmarks.json only",
    )
    args = parser.parse_args(argv)
    # stopped from outside: unwind, so that the stack is stopped and nothing is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.part:
        _run_parts(args.part, args.quick)
        return
    q = args.quick
    opts = suite.Options(
        size=args.size or (2_000 if q else 24_300),
        latency_s=args.latency_seconds or (300.0 if args.full else 15.0 if q else 90.0),
        rates=tuple(float(x) for x in args.rates.split(",") if x),
        close_size=args.close_size or (100_000 if q else 1_000_000),
        startups=args.startups if args.startups is not None else (1 if q else 3),
        million=args.million,
        two_instances=args.two_instances,
        timeout=args.timeout,
    )
    results = suite.run(opts)
    report.print_table(results)
    if args.no_write:
        return
    command = "make bench" + (
        f' BENCH_ARGS="{shlex.join(argv if argv is not None else sys.argv[1:])}"'
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    doc, raw_path = args.out / DOC.name, args.out / RAW.name
    if not doc.exists() and DOC.exists():
        doc.write_text(DOC.read_text(encoding="utf-8"), encoding="utf-8")
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    raw["make_bench"] = results
    raw_path.write_text(json.dumps(raw, indent=2) + "\n")
    report.write_markdown(doc, report.markdown(results, command))
    print(f"wrote {doc} and {raw_path}", file=sys.stderr)


def _parts() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )


def _run_parts(names: list[str], quick: bool) -> None:
    unknown = set(names) - set(_parts())
    if unknown:
        raise SystemExit(f"no such component benchmark: {', '.join(sorted(unknown))}")
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}", file=sys.stderr, flush=True)
        figures = module.run(quick=quick)
        print(json.dumps(figures, indent=2), flush=True)
        raw.setdefault("parts", {})[name] = figures
    RAW.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
