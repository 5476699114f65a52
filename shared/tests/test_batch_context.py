"""A batch's work runs in a context of its own: a timer armed meanwhile (asyncpg arms
one per statement it caches, for 5 minutes) must not keep the batch alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import pytest
import uvloop
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from perlinsos_shared.service import in_own_context

MESSAGE: ContextVar[object] = ContextVar("message")  # as FastStream keeps the message


class Batch:
    """Stands for a batch of 2,000 records."""


async def _handle_batch(run: bool) -> weakref.ref[Batch]:
    batch = Batch()
    MESSAGE.set(batch)

    async def work() -> None:
        asyncio.get_running_loop().call_later(300, lambda: None)  # a statement cached

    await (in_own_context(work()) if run else work())
    MESSAGE.set(None)
    return weakref.ref(batch)


# the services run on uvloop (`ServiceRuntime.run`); asyncio's own loop alike
LOOPS = pytest.mark.parametrize("run_loop", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@LOOPS
def test_a_timer_armed_during_the_batch_does_not_pin_it(run_loop: Callable[..., Any]) -> None:
    async def freed(run: bool) -> bool:
        ref = await asyncio.create_task(_handle_batch(run))
        gc.collect()
        return ref() is None

    async def main() -> tuple[bool, bool]:
        return await freed(run=True), await freed(run=False)

    own_context, plain = run_loop(main())
    assert own_context
    assert not plain  # what it was before: awaited plainly, the timer keeps the batch


@LOOPS
def test_the_trace_context_is_carried_over(run_loop: Callable[..., Any]) -> None:
    tracer = TracerProvider().get_tracer("test")
    seen: list[trace.Span] = []

    async def work() -> None:
        seen.append(trace.get_current_span())

    async def main() -> trace.Span:
        with tracer.start_as_current_span("batch") as span:
            await in_own_context(work())
        return span

    assert seen == [run_loop(main())]
