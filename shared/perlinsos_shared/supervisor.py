"""One supervisor for every background loop of a service.

A loop (the outbox relay, the metric sampler, every loop a service registers with
`ServiceRuntime.background`) simply lets its exceptions escape. The supervisor then:

- logs the failure once per change of state: the first failure with its traceback, a
  different kind of failure once more, the same failure again only at debug level, and
  the recovery once (a database that is away for a minute gives two lines, not a
  traceback every half second);
- waits with capped exponential backoff and jitter (`backoff_initial_s` doubling up to
  `backoff_max_s`, each wait drawn between half and all of it) and starts the loop again;
- counts each restart in `perlinsos.loop.restarts` (labels: service, loop; nothing
  personal) and shows failing loops in `perlinsos.loop.failing`.

A loop counts as recovered once it has run for `healthy_after_s` without failing again;
until then it is *failing*, and `/readyz` says so. A loop that returns (rather than
raising) has finished its work and is not started again. `stop()` asks each loop to stop
(its `on_stop` hook, e.g. the relay finishing its batch), then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.metrics import CallbackOptions, Observation

from perlinsos_shared.metrics import get_meter
from perlinsos_shared.scrubbing import scrub

log = logging.getLogger("perlinsos.supervisor")

LoopFn = Callable[[], Coroutine[Any, Any, None]]
LoopStatus = Literal["starting", "running", "failing", "finished", "stopped"]


def error_summary(exc: BaseException) -> str:
    """The exception's type and first line, scrubbed of anything personal, short."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return scrub(f"{type(exc).__name__}: {first}")[:300]


@dataclass
class Loop:
    """One supervised loop and what is known about its health."""

    name: str
    fn: LoopFn
    on_stop: Callable[[], None] | None = None
    status: LoopStatus = "starting"
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    failing_since: float | None = None  # time.monotonic() of the first failure in a row
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    _generation: int = field(default=0, repr=False)


class Supervisor:
    """Runs loops, restarts the ones that fail, and reports which are failing."""

    def __init__(
        self,
        service: str,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self._rng = rng or random.Random()
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.loops: dict[str, Loop] = {}
        meter = get_meter("perlinsos.supervisor")
        self._restarts = meter.create_counter(
            "perlinsos.loop.restarts",
            unit="{restart}",
            description="Background loops started again after a failure",
        )
        meter.create_observable_gauge(
            "perlinsos.loop.failing",
            callbacks=[self._observe_failing],
            unit="{loop}",
            description="1 while a background loop is failing (restarting with backoff)",
        )

    def start(self, name: str, fn: LoopFn, *, on_stop: Callable[[], None] | None = None) -> Loop:
        """Run `fn()` under supervision from now until `stop()`."""
        if name in self.loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        loop = Loop(name=name, fn=fn, on_stop=on_stop)
        self.loops[name] = loop
        loop.task = asyncio.create_task(self._supervise(loop), name=f"supervised:{name}")
        return loop

    def failing(self) -> list[str]:
        """Names of the loops that failed and have not yet run well for `healthy_after_s`."""
        return [name for name, loop in list(self.loops.items()) if loop.status == "failing"]

    def backoff(self, failures: int) -> float:
        """Seconds to wait before start number `failures + 1`: capped, doubled, jittered."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(0, failures - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._stop_event.set()  # ends every backoff wait
        for loop in self.loops.values():
            if loop.on_stop is not None:
                loop.on_stop()
            elif loop.task is not None:
                loop.task.cancel()
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, loop: Loop) -> None:
        while not self._stopping:
            loop._generation += 1
            if loop.status != "failing":
                loop.status = "running"
            timer = asyncio.get_running_loop().call_later(
                self.healthy_after_s, self._ran_well, loop, loop._generation
            )
            try:
                await loop.fn()
            except asyncio.CancelledError:
                timer.cancel()
                loop.status = "stopped"
                raise
            except Exception as exc:
                timer.cancel()
                if self._stopping:
                    break
                self._failed(loop, exc)
                with contextlib.suppress(TimeoutError):
                    delay = self.backoff(loop.consecutive_failures)
                    await asyncio.wait_for(self._stop_event.wait(), timeout=delay)
                if self._stopping:
                    break
                loop.restarts += 1
                self._restarts.add(1, {"service": self.service, "loop": loop.name})
                continue
            timer.cancel()
            if not self._stopping:
                log.info("background loop finished", extra={"loop": loop.name})
                loop.status = "finished"
                return
            break
        loop.status = "stopped"

    def _failed(self, loop: Loop, exc: Exception) -> None:
        summary = error_summary(exc)
        extra = {"service": self.service, "loop": loop.name, "error": summary}
        loop.consecutive_failures += 1
        if loop.status != "failing":
            loop.status = "failing"
            loop.failing_since = time.monotonic()
            # the one traceback of this failure (the log formatter masks anything personal)
            log.error(
                "background loop failed; starting it again with backoff",
                exc_info=exc,
                extra=extra,
            )
        elif summary != loop.last_error:
            log.warning("background loop still failing, differently", extra=extra)
        else:
            log.debug("background loop failed again", extra=extra)
        loop.last_error = summary

    def _ran_well(self, loop: Loop, generation: int) -> None:
        if loop._generation != generation or loop.status != "failing":
            return
        down_for = time.monotonic() - (loop.failing_since or time.monotonic())
        log.info(
            "background loop recovered",
            extra={
                "service": self.service,
                "loop": loop.name,
                "failures": loop.consecutive_failures,
                "down_s": round(down_for, 1),
            },
        )
        loop.status = "running"
        loop.consecutive_failures = 0
        loop.failing_since = None

    def _observe_failing(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(1 if loop.status == "failing" else 0, {"loop": loop.name})
            for loop in list(self.loops.values())
        ]
