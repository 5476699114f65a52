"""Resident memory of each service sampled through the whole run, and CPU time per process.

`Sampler` runs in a thread of its own: every second it reads the resident set size of
every service process of the stack (by pid: an instance started again is a new series),
and labels the sample with the phase the run is in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil

from perlinsos_devruntime.stack import Stack


@dataclass
class Sampler:
    stack: Stack
    every_s: float = 1.0
    phase: str | None = "start"  # None: not sampling
    samples: list[tuple[float, str, str, int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every_s):
            if self.phase is None:
                continue
            for svc in list(self.stack.services):
                try:
                    rss = psutil.Process(svc.process.pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.samples.append(
                    (time.monotonic() - t0, self.phase or "", svc.name, svc.process.pid, rss)
                )

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per service: the highest sample, the last, and the last of each phase."""
        out: dict[str, dict[str, Any]] = {}
        for _, phase, name, _pid, rss in self.samples:
            s = out.setdefault(name, {"max_mb": 0.0, "by_phase_end_mb": {}})
            s["max_mb"] = round(max(s["max_mb"], rss), 1)
            s["end_mb"] = round(rss, 1)
            s["by_phase_end_mb"][phase] = round(rss, 1)
        return out


def own_cpu_seconds() -> float:
    """User + system CPU seconds so far of this process (the agency publishing, the
    listener): not part of the system, but on the same cores."""
    return float(sum(psutil.Process().cpu_times()[:2]))


async def postgres_wal(admin_url: str) -> dict[str, int]:
    """PostgreSQL's WAL so far (bytes, records, full-page images) and its checkpoints."""
    conn = await asyncpg.connect(admin_url)
    try:
        wal = await conn.fetchrow("SELECT wal_bytes, wal_records, wal_fpi FROM pg_stat_wal")
        # checkpoints performed (PostgreSQL 18; `num_timed` also counts those skipped)
        done = await conn.fetchval("SELECT num_done FROM pg_stat_checkpointer")
    finally:
        await conn.close()
    return {
        "bytes": int(wal["wal_bytes"]),
        "records": int(wal["wal_records"]),
        "full_page_images": int(wal["wal_fpi"]),
        "checkpoints": int(done),
    }


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each named process (with its children, for
    PostgreSQL's backends)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            total = sum(proc.cpu_times()[:2])
            for child in proc.children(recursive=True):
                try:
                    total += sum(child.cpu_times()[:2])
                except psutil.Error:
                    pass
        except psutil.Error:
            continue
        out[name] = total
    return out


def stack_pids(stack: Stack) -> dict[str, int]:
    """Every process of the stack by name (`notify`, `notify#2` for a second instance,
    `postgres`, `broker`)."""
    pids: dict[str, int] = {}
    for svc in stack.services:
        name = svc.name
        n = 2
        while name in pids:
            name, n = f"{svc.name}#{n}", n + 1
        pids[name] = svc.process.pid
    if stack.postgres is not None and stack.postgres.pid is not None:
        pids["postgres"] = stack.postgres.pid
    if stack.kafka is not None and stack.kafka.pid is not None:
        pids["broker"] = stack.kafka.pid
    return pids
