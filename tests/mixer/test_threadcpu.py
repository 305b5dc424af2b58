"""Per-thread CPU accounting of the mixer process (mixer/threadcpu.py)."""

from __future__ import annotations

import threading
import time

from mixer.threadcpu import thread_cpu_seconds, thread_group


def test_thread_group_merges_pool_workers() -> None:
    assert thread_group("encode_1") == thread_group("encode_0") == "encode"
    assert thread_group("audio-encode_0") == "audio-encode"
    assert thread_group("video-decoder") == "video-decoder"
    assert thread_group("MainThread") == "MainThread"


def test_busy_thread_is_charged_to_its_name() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    before = thread_cpu_seconds()
    assert before is not None
    workers = [threading.Thread(target=spin, name=f"spinner_{i}") for i in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.6)
    during = thread_cpu_seconds()
    stop.set()
    for w in workers:
        w.join()
    assert during is not None
    # Two spinning threads sharing the GIL use about 0.6 s of CPU between them.
    assert 0.3 <= during.get("spinner", 0.0) - before.get("spinner", 0.0) <= 1.5, during
    assert "MainThread" in during
