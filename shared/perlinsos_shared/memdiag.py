"""Opt-in memory diagnostics: what a service's resident memory is made of, over time.

Off unless `PERLINSOS_MEMDIAG_EVERY_S` is set (seconds between reports). Then every so
often the service appends a report to `<state dir>/memory/<service>-<pid>.txt`: resident
memory, what glibc's malloc holds in use and free (memory freed but kept shows as much
free inside the heap), CPython's small-object arenas and the free space inside them,
the commonest object types, what `gc.collect()` frees (garbage kept only by reference
cycles), and with `PERLINSOS_MEMDIAG_REFERRERS=<type name>` what holds an object of that
type, up the chain. With `PERLINSOS_MEMDIAG_FRAMES` above 0 (0 by default) it also runs
`tracemalloc` with that many frames per allocation and adds what traced allocations
hold, the lines whose allocations grew most since the first report and the object types
whose counts grew most. Tracing slows a service a lot (under load premium stalled past
its liveness limit and was restarted) and adds to its memory: for finding a leak, not
for production; without it the reports are cheap.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import time
import tracemalloc
import types
from collections import Counter
from pathlib import Path

ENV_EVERY = "PERLINSOS_MEMDIAG_EVERY_S"
ENV_FRAMES = "PERLINSOS_MEMDIAG_FRAMES"
ENV_REFERRERS = "PERLINSOS_MEMDIAG_REFERRERS"  # a type name: what holds its objects
TOP = 25


def enabled() -> float | None:
    """Seconds between reports, or None when diagnostics are off."""
    raw = os.environ.get(ENV_EVERY, "").strip()
    return float(raw) if raw else None


def start_tracing() -> None:
    frames = int(os.environ.get(ENV_FRAMES, "0"))
    if enabled() and frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)


_PYMALLOC = {
    "# arenas allocated current": "arenas",
    "# bytes in allocated blocks": "in_blocks",
    "# bytes in available blocks": "free_blocks",
}


def pymalloc_stats() -> dict[str, int]:
    """CPython's small-object allocator (objects up to 512 bytes, in 1 MB arenas that go
    back to the system only when entirely empty): arenas held, bytes in live blocks, bytes
    free inside them. Read from `sys._debugmallocstats`, which writes to stderr."""
    import sys
    import tempfile

    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out: dict[str, int] = {}
    for line in text.splitlines():
        for prefix, key in _PYMALLOC.items():
            if line.startswith(prefix) and key not in out:
                out[key] = int(line.split("=")[-1].replace(",", "").strip())
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_stats() -> dict[str, int]:
    """glibc's view of the heap (empty elsewhere): bytes in use, free inside the heap,
    and in mmapped blocks (summed over arenas)."""
    path = ctypes.util.find_library("c")
    if not path:
        return {}
    libc = ctypes.CDLL(path)
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _describe(o: object) -> str:
    if isinstance(o, dict):
        return f"dict(len={len(o)}, keys={[str(k)[:40] for k in list(o)[:6]]})"
    if isinstance(o, types.FrameType):
        return f"frame {o.f_code.co_filename}:{o.f_code.co_name}"
    if isinstance(o, list | tuple | set | frozenset):
        return f"{type(o).__name__}(len={len(o)})"
    return f"{type(o).__module__}.{type(o).__qualname__}"


def referrer_chain(type_name: str, depth: int = 8) -> list[str]:
    """What holds an object of this type, and what holds that, `depth` steps up."""
    found = next((o for o in gc.get_objects() if type(o).__name__ == type_name), None)
    if found is None:
        return [f"  no {type_name} alive"]
    lines = [f"  what holds a {type_name}:"]
    here: object = found
    seen = {id(found)}
    mine: set[int] = {id(lines), id(seen)}
    for level in range(depth):
        holders = [r for r in gc.get_referrers(here) if id(r) not in seen | mine]
        up = [r for r in holders if not isinstance(r, types.FrameType)]
        mine |= {id(holders), id(up)}
        lines += [f"  {'  ' * level}<- {_describe(r)}" for r in holders[:4]]
        if not up:
            break
        here = up[0]
        seen.add(id(here))
    return lines


class Reporter:
    def __init__(self, service: str, state_dir: Path) -> None:
        self.path = state_dir / "memory" / f"{service}-{os.getpid()}.txt"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.first: tracemalloc.Snapshot | None = None
        self.first_types: Counter[str] | None = None

    def report(self) -> str:
        """One report, appended to the file (and returned)."""
        counts = Counter(type(o).__name__ for o in gc.get_objects())
        lines = [self._totals(sum(counts.values()))]
        if tracemalloc.is_tracing():
            lines += self._traced(counts)
        else:
            lines += [f"  {k}: {v}" for k, v in counts.most_common(TOP)]
        # what only the cycle collector frees: garbage in reference cycles, kept until
        # the generation it reached is collected
        unreachable = gc.collect()
        after = Counter(type(o).__name__ for o in gc.get_objects())
        lines.append(f"  gc.collect() found {unreachable} unreachable; types it freed most:")
        freed = Counter({k: v - after.get(k, 0) for k, v in counts.items()})
        lines += [
            f"  {k}: -{v} (left {after.get(k, 0)})" for k, v in freed.most_common(10) if v > 0
        ]
        if wanted := os.environ.get(ENV_REFERRERS, "").strip():
            lines += referrer_chain(wanted)
        text = "\n".join(lines) + "\n"
        with self.path.open("a") as f:
            f.write(text)
        return text

    def _totals(self, objects: int) -> str:
        mb = 2**20
        traced, peak = tracemalloc.get_traced_memory()
        small = pymalloc_stats()
        return (
            f"== t={time.monotonic() - self.started:.0f}s rss={rss_bytes() / mb:.1f}MB"
            f" traced={traced / mb:.1f}MB (peak {peak / mb:.1f})"
            + "".join(f" malloc_{k}={v / mb:.1f}MB" for k, v in malloc_stats().items())
            + "".join(  # not printed by CPython while tracemalloc runs
                f" pymalloc_{k}={v if k == 'arenas' else f'{v / mb:.1f}MB'}"
                for k, v in small.items()
            )
            + f" gc_objects={objects} gc_counts={gc.get_count()}"
        )

    def _traced(self, counts: Counter[str]) -> list[str]:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if self.first is None or self.first_types is None:
            self.first, self.first_types = snap, counts
            return [f"  {s}" for s in snap.statistics("lineno")[:TOP]]
        lines = ["  grown since the first report, by line:"]
        lines += [f"  {s}" for s in snap.compare_to(self.first, "lineno")[:TOP]]
        if tracemalloc.get_traceback_limit() > 1:
            lines.append("  grown since the first report, by traceback:")
            for s in snap.compare_to(self.first, "traceback")[:5]:
                lines.append(f"  {s}")
                lines += [f"      {f}" for f in s.traceback.format()[-12:]]
        grown = Counter({k: v - self.first_types.get(k, 0) for k, v in counts.items()})
        lines.append("  object types grown since the first report:")
        lines += [f"  {k}: +{v} (now {counts[k]})" for k, v in grown.most_common(15)]
        return lines


async def report_forever(service: str, state_dir: Path, every_s: float) -> None:
    reporter = Reporter(service, state_dir)
    while True:
        reporter.report()  # in the loop's thread: the snapshot is consistent
        await asyncio.sleep(every_s)
