"""CPU time of this process's threads, summed by what they do (Linux ``/proc``).

The ops API reports it (``GET /api/stats`` → ``process.thread_cpu_s``) so that where the
mixer's CPU goes — the event loop, composition, the view encoders, the decoders — can be
read from a running lesson: the capacity benchmark takes the difference over its window.
"""

from __future__ import annotations

import os
import re
import threading

NATIVE = "native"
"""Threads Python did not start (libavcodec and libx264 worker threads)."""

_INDEX = re.compile(r"_\d+$")


def thread_group(name: str) -> str:
    """``encode_1`` → ``encode``: a pool's workers count as one."""
    return _INDEX.sub("", name)


def thread_cpu_seconds() -> dict[str, float] | None:
    """User + system CPU seconds used so far by this process's threads, summed per
    :func:`thread_group` of their Python name (threads that have exited are not counted).
    None where ``/proc`` is missing."""
    names = {t.native_id: thread_group(t.name) for t in threading.enumerate()}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread exited meanwhile
            continue
        # Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        fields = stat.rsplit(b")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        group = names.get(int(tid), NATIVE)
        out[group] = round(out.get(group, 0.0) + seconds, 2)
    return out
