"""`make profile`: py-spy samples every service process while the cohort runs through the
embedded stack, then prints each service's top costs.

    uv run --frozen python -m benchmarks.profile [--size 24300] [--rate 100] [--out DIR]
    uv run --frozen python -m benchmarks.profile --summarize DIR   # an earlier run again

Each service's samples are written in py-spy's collapsed-stack format (`DIR/<service>.txt`,
one `frame;frame;... count` line per distinct stack: load it in speedscope or feed it to
flamegraph.pl) and summarised three ways: self time by library, self time by function
(where the CPU was), and the project's own functions by the time spent in them and in
everything they call (inclusive). py-spy attaches to running processes, so it needs ptrace rights over
them (root, or `kernel.yama.ptrace_scope` 0); it samples without pausing the process
(`--nonblocking`), and only threads that are running, not those idle in the event loop.

PostgreSQL is profiled by its own means: the embedded server is started with
`pg_stat_statements`, and the statements that took the most time are printed
(`DIR/postgres.tsv`), with the CPU seconds each process (services, PostgreSQL, broker)
spent while the cohort ran (`DIR/cpu.tsv`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: `uv sync` installs it (a dev dependency)")
    return found


def _label(frame: str) -> tuple[str, str]:
    """(`module.function`, library) of one collapsed-stack frame."""
    match = FRAME.match(frame)
    if not match:
        return frame, "?"
    func, file = match["func"], match["file"]
    parts = Path(file).with_suffix("").parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif any(p.startswith("perlinsos_") for p in parts):
        first = next(i for i, p in enumerate(parts) if p.startswith("perlinsos_"))
        parts = parts[first:]
    elif parts and parts[0] == "/":  # elsewhere: its folder and file
        parts = parts[-2:]
    library = parts[0] if parts else "?"  # py-spy shortens paths to `package/module.py`
    if library.startswith("perlinsos_"):
        library = ".".join(parts[:2])
    module = ".".join(parts)
    return f"{module}.{func}", library


def summarize(path: Path, top: int = 15) -> str:
    """The top costs in one collapsed-stack file, as text."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    libs: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        leaf, lib = _label(frames[-1])
        own[leaf] += count
        libs[lib] += count
        seen = set()
        for frame in frames:
            name, frame_lib = _label(frame)
            if frame_lib.startswith("perlinsos_") and name not in seen:
                seen.add(name)
                under[name] += count
    if not total:
        return f"{path.stem}: no samples\n"

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"  {title}"]
        rows += [f"    {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
        return rows

    lines = [f"{path.stem}: {total} samples"]
    lines += block("self, by library", libs)
    lines += block("self, by function", own)
    lines += block("inclusive, perlinsos functions (time spent in them and below)", under)
    return "\n".join(lines) + "\n"


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        out[name] = total
    return out


def _rss_mib(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                total += psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
        out[name] = total
    return out


def _processes(stack: Any) -> dict[str, list[int]]:
    """Process ids by part: each service, PostgreSQL (server and backends), the broker."""
    import psutil

    pids: dict[str, list[int]] = {svc.name: [svc.process.pid] for svc in stack.services}
    pids["postgres"], pids["broker"] = [], []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" or cmd.startswith("postgres:"):
            pids["postgres"].append(proc.info["pid"])
        elif "tansu" in cmd and str(stack.bootstrap_servers.rsplit(":", 1)[-1]) in cmd:
            pids["broker"].append(proc.info["pid"])
    pids["postgres"] = [p for p in pids["postgres"] if _under(p, stack)]
    return pids


def _under(pid: int, stack: Any) -> bool:
    """Whether `pid` is this stack's PostgreSQL (the server or one of its backends)."""
    import psutil

    server = stack.postgres.pid if stack.postgres else None
    try:
        proc = psutil.Process(pid)
        return pid == server or proc.ppid() == server
    except psutil.Error:
        return False


async def top_statements(admin_url: str, top: int) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = await conn.fetch(
            "SELECT round(total_exec_time::numeric / 1000, 2) AS seconds, calls, rows,"
            " round((total_exec_time / greatest(calls, 1))::numeric, 3) AS mean_ms,"
            " regexp_replace(query, '\\s+', ' ', 'g') AS query"
            " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1",
            top,
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


def spy(pid: int, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `out` (collapsed stacks) until `stop_spies`."""
    return subprocess.Popen(
        [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
         "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    """Stop each py-spy (it writes its file on SIGINT); say why one failed."""
    for one in spies:
        if one.poll() is None:
            one.send_signal(signal.SIGINT)
    for one in spies:
        try:
            _, err = one.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            one.kill()
            continue
        if one.returncode not in (0, -signal.SIGINT):
            print(err.decode(errors="replace")[-500:], file=sys.stderr)
    spies.clear()


def _record(size: int, rate: int, out: Path, top: int) -> None:
    from rich.console import Console

    from perlinsos_cli.cohort_run import generate, run_cohort
    from perlinsos_devruntime import embedded
    from perlinsos_devruntime.embedded import free_port, free_port_block
    from perlinsos_devruntime.stack import EMBEDDED_TOPIC_PARTITIONS, Stack
    from perlinsos_shared.settings import get_settings

    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    state = tempfile.mkdtemp(prefix="perlinsos-profile-")
    os.environ["PERLINSOS_STATE_DIR"] = state
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        os.environ.pop(var, None)
    get_settings.cache_clear()
    embedded.PG_SETTINGS = {
        **embedded.PG_SETTINGS,
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "all",
    }
    stack = Stack(
        get_settings(),
        kafka_port=free_port(),
        pg_port=free_port(),
        http_port_base=free_port_block(4),
        topic_partitions=EMBEDDED_TOPIC_PARTITIONS,
    )
    spies: list[subprocess.Popen[bytes]] = []
    try:
        stack.start()
        subs = generate(size, 2025, 0.03)
        spies = [spy(svc.process.pid, out / f"{svc.name}.txt", rate) for svc in stack.services]
        time.sleep(1)  # attached before the first submission
        pids = _processes(stack)
        before = _cpu_seconds(pids)
        report = asyncio.run(
            run_cohort(stack.bootstrap_servers, stack.logins.reader, subs, console)
        )
        after = _cpu_seconds(_processes(stack))
        rss = _rss_mib(_processes(stack))
        with (out / "cpu.tsv").open("w") as f:
            f.write("part\tCPU s\tRSS MiB at the end\n")
            for name in after:
                f.write(f"{name}\t{after[name] - before.get(name, 0.0):.1f}\t{rss[name]:.0f}\n")
        statements = asyncio.run(top_statements(stack.database_url, top))
        with (out / "postgres.tsv").open("w") as f:
            f.write("seconds\tcalls\trows\tmean_ms\tquery\n")
            for row in statements:
                f.write("\t".join(str(v) for v in row) + "\n")
        console.print(
            f"{size:,} decided after {report.seconds_to_decided:.1f}s, every SMS after "
            f"{report.seconds_to_sms:.1f}s"
        )
    finally:
        stop_spies(spies)
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--size", type=int, default=24_300, help="people in the cohort")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path(".perlinsos-profile"))
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    parser.add_argument("--summarize", type=Path, help="only summarise an earlier run's DIR")
    args = parser.parse_args()
    folder = args.summarize or args.out
    if args.summarize is None:
        _record(args.size, args.rate, folder, args.top)
    print_folder(folder, args.top)


def print_folder(folder: Path, top: int) -> None:
    """Print an earlier run's CPU table, each service's top costs and PostgreSQL's."""
    cpu = folder / "cpu.tsv"
    if cpu.exists():
        print("CPU seconds while the cohort ran, and resident memory at its end:")
        print(cpu.read_text())
    for path in sorted(folder.glob("*.txt")):
        print(summarize(path, top))
    statements = folder / "postgres.tsv"
    if statements.exists():
        print("postgres: the statements that took the most time")
        for line in statements.read_text().splitlines():
            print("  " + line[:300])


if __name__ == "__main__":
    main()
