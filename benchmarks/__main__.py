"""Run every benchmark module (or those named) and record the figures."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help="bench module names without bench_ prefix")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    found = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    chosen = [n for n in found if not args.names or n.removeprefix("bench_") in args.names]
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "when": time.ctime()}
    }
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", file=sys.stderr, flush=True)
        figures = module.run(quick=args.quick)
        results[name.removeprefix("bench_")] = figures
        print(json.dumps(figures, indent=2), flush=True)
    out = Path("docs/benchmarks.json")
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(results)
    out.write_text(json.dumps(previous, indent=2) + "\n")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
