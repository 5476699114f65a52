"""The glibc settings give freed memory back (run in a child process: mallopt and the
heap are per process, and the test runner's own heap would blur the figures)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from perlinsos_shared import malloc_tuning

# A burst as a batch makes one: large buffers (a broker fetch, a relay batch) freed
# once, then many small blocks (records, rows) of which every tenth stays alive, so
# that nothing above them can be returned from the top of the heap.
CHILD = textwrap.dedent(
    """
    import os, sys
    from perlinsos_shared import malloc_tuning

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    tuned = malloc_tuning.tune_malloc()
    for _ in range(3):
        big = [bytearray(3 * 2**20) for _ in range(8)]
        del big
    blocks = [bytearray(1500) for _ in range(100_000)]
    keep = blocks[::10]
    del blocks
    before = rss_mb()
    malloc_tuning.trim()
    print(tuned, before, rss_mb(), len(keep))
    """
)


def _child(tuning: str) -> tuple[bool, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={"PERLINSOS_MALLOC_TUNING": tuning, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", float(out[1]), float(out[2])


@pytest.mark.skipif(malloc_tuning._libc() is None, reason="not glibc")
def test_trim_returns_freed_memory() -> None:
    tuned, before, after = _child("1")
    assert tuned
    # 150 MB of 1.5 KB blocks freed, 15 MB still alive among them: trimming returns the
    # free pages in between
    assert after < before - 60, (before, after)


@pytest.mark.skipif(malloc_tuning._libc() is None, reason="not glibc")
def test_off_switch() -> None:
    tuned, before, after = _child("0")
    assert not tuned
    assert after > before - 5  # nothing trimmed: the freed memory stays resident
