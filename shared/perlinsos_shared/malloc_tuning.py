"""glibc malloc settings that let a service give memory back after a burst.

A batch of 2,000 events, its spans and a broker fetch of several MB are freed when the
batch is done, but glibc keeps most of that memory: its threshold for serving a large
block from mmap (returned on free) rises to the largest block freed so far, so later
fetch buffers come from the heap and stay there; free space inside the heap is only
returned when it is at the top; and each thread that allocates (the span exporter, the
health server, executor threads) may get an arena of its own. So resident memory rose
with every burst to its high-water mark and stayed there.

`tune_malloc` fixes the mmap threshold (which also fixes the trim threshold) and allows
two arenas; `trim` returns the free pages of every arena (`malloc_trim(0)`, a few ms),
called by the metric sampler every few seconds. `PERLINSOS_MALLOC_TUNING=0` turns both
off (to compare). Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache
from typing import Any

log = logging.getLogger("perlinsos.memory")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept fixed
TRIM_THRESHOLD = 1024 * 1024
ARENA_MAX = 2


@cache
def _libc() -> Any | None:
    if os.environ.get("PERLINSOS_MALLOC_TUNING", "1").strip() == "0":
        return None
    path = ctypes.util.find_library("c")
    if not path:
        return None
    try:
        libc = ctypes.CDLL(path)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl has neither)
    return libc


def tune_malloc() -> bool:
    """Call once, early (before threads start). True when the settings were applied."""
    libc = _libc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not ok:
        log.warning("malloc settings not applied")
    return ok


def trim() -> bool:
    """Give free heap pages back to the system; True when some were."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
