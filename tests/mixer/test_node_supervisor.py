"""The node's supervisor (issue 20) with real child processes: a worker that never
answers is killed and restarted, one that dies is restarted, and closing the node stops
every worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mixer.node as node_mod
from mixer.node import Node
from tests.county import County

STUCK = [sys.executable, "-c", "import sys, time; sys.stdin.buffer.read(1); time.sleep(60)"]
"""A "worker" that takes its handoff and then never serves its socket."""


async def _until(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


@pytest.mark.timeout(30)
async def test_stuck_and_dead_workers_restarted(tmp_path: Path, county: County,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_mod, "START_TIMEOUT_S", 0.3)
    monkeypatch.setattr(node_mod, "HUNG_S", 1.0)
    monkeypatch.setattr(node_mod, "SUPERVISE_INTERVAL_S", 0.1)
    county.mixer["data_dir"] = str(tmp_path / "data")
    node = Node(county.config(), 2, STUCK)
    await node.start()
    try:
        first = [w.pid for w in node.workers]
        assert oct((tmp_path / "data" / "run").stat().st_mode & 0o777) == "0o700"
        # Alive but never answering: killed after HUNG_S, then restarted.
        assert await _until(lambda: all(w.restarts >= 1 and w.alive for w in node.workers), 8)
        assert [w.pid for w in node.workers] != first
        # Dead: restarted after its backoff.
        w0 = node.workers[0]
        pid, restarts = w0.pid, w0.restarts
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert await _until(lambda: w0.restarts > restarts and w0.alive and w0.pid != pid, 8)
    finally:
        await node.aclose()
    # Stopped and reaped (a return code), none left behind.
    assert all(w.proc is not None and w.proc.returncode is not None for w in node.workers)


@pytest.mark.timeout(30)
async def test_lessons_of_one_process_mixer_go_to_worker_0(
        tmp_path: Path, county: County, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching ``mixer.workers`` on keeps the live lessons: worker 0 resumes them."""
    monkeypatch.setattr(node_mod, "START_TIMEOUT_S", 0.1)
    data = tmp_path / "data"
    data.mkdir()
    (data / "lessons.json").write_text('{"lessons": []}', encoding="utf-8")
    county.mixer["data_dir"] = str(data)
    node = Node(county.config(), 1, STUCK)
    await node.start()
    await node.aclose()
    assert not (data / "lessons.json").exists()
    assert (data / "workers" / "0" / "lessons.json").read_text() == '{"lessons": []}'
