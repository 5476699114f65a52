"""Benchmarks, run with `make bench` (never part of `make test`).

Each module `benchmarks/bench_*.py` defines `run(quick: bool) -> dict[str, float | int | str]`;
`python -m benchmarks [name ...] [--quick]` runs them and writes docs/benchmarks.json.
"""
