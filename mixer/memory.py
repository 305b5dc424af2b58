"""Give a finished lesson's memory back to the operating system (glibc's allocator).

A lesson's media pipeline (decoders, compositor, one H.264 encoder per view, their worker
threads) allocates tens of MB natively. Freed, that memory stays in glibc's heaps: each
new worker thread may get its own arena (up to 8 per core), and free pages inside a heap
are kept, so a mixer that ran many lessons kept ~50 MB more than after its first few
(``benchmarks/lesson_cycles.py``: 207 MB after 5 start/end cycles, 257 MB after 200).
Two arenas and a ``malloc_trim`` after each lesson's report keep it flat.

Both are no-ops where the C library is not glibc. ``MALLOC_ARENA_MAX`` in the environment
(glibc reads it at start) takes precedence over :func:`limit_malloc_arenas`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""``mallopt`` parameter number of glibc's ``M_ARENA_MAX`` (malloc.h)."""
MIXER_ARENAS = 2
"""Arenas for the mixer process: 2 kept RSS within 5 % over 60 lessons, 4 within 12 %
(in-process start/end cycles of the 720p county)."""


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def limit_malloc_arenas(arenas: int = MIXER_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on (call at process start,
    before worker threads exist). False if not glibc or ``MALLOC_ARENA_MAX`` is set."""
    if _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    ok = bool(_LIBC.mallopt(M_ARENA_MAX, arenas))
    logger.debug("malloc arenas limited to %d: %s", arenas, ok)
    return ok


def release_free_memory() -> bool:
    """Return free heap pages to the operating system (``malloc_trim(0)``: walks the
    heaps, a few ms; call it from a worker thread). True if any memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
