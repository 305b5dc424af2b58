"""A whole lesson with the real mixer and three real agent processes on loopback.

One deployment serves the whole module (starting processes is the slow part); the tests
run in file order: before the lesson, during it, a rejoin, then the end.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from syncclass.demo import LocalDeployment
from tests.county import County

pytestmark = pytest.mark.integration

MAIN, RURAL = "main-3-1", ["hetou-3", "shanping-3"]
OUTSIDER = "outsider-9"
OUTSIDER_TOKEN = "outsider-token-0123456789"
LESSON_S = 12.0
MIN_FPS = 10.0
"""Issue 2's floor: at least 10 of the nominal 15 fps sustained (quiet: 15.0)."""


def make_config(tmp: Path) -> Path:
    county = County(tmp)
    # A classroom with a valid credential that is in no pairing.
    county.data["classrooms"].append(
        {
            "id": OUTSIDER,
            "school": "hetou-point",
            "name": "外校",
            "label": "Outsider",
            "role": "receiving",
            "token": OUTSIDER_TOKEN,
            "tone_hz": 1500,
        }
    )
    return county.write()


class Run:
    def __init__(self, dep: LocalDeployment, out: Path) -> None:
        self.dep = dep
        self.out = out
        self.before: dict[str, dict[str, Any]] = {}
        self.early: dict[str, dict[str, Any]] = {}
        self.during: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {}
        self.span_s = 0.0

    def ws_url(self) -> str:
        return self.dep.mixer_url.replace("http", "ws") + "/ws"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("lesson")
    dep = LocalDeployment(make_config(tmp), tmp)
    out = tmp / "classrooms"
    try:
        dep.start_mixer()
        for cid in [MAIN, *RURAL]:
            dep.start_agent(cid, out_dir=out)
        members = {MAIN, *RURAL}
        dep.wait_for(
            lambda: members <= set(dep.mixer_status()["classrooms"]), 30, "agents connected"
        )
        r = Run(dep, out)
        r.before = {cid: dep.agent_status(cid) for cid in members}
        status, lesson = dep.agent_command(MAIN, "start")  # the teacher presses Start lesson
        assert status == 200, lesson
        dep.wait_for(
            lambda: all(
                dep.agent_status(c)["reception"]
                and dep.agent_status(c)["reception"]["frames_received"] > 0
                for c in members
            ),
            30,
            "media flowing",
        )
        r.early = {cid: dep.agent_status(cid) for cid in members}
        t0 = time.monotonic()
        time.sleep(LESSON_S)
        r.during = {cid: dep.agent_status(cid) for cid in members}
        r.span_s = time.monotonic() - t0
        r.stats = dep.mixer_stats()
        yield r
    except BaseException:
        dep.write_logs(60)
        raise
    finally:
        dep.stop_all()


def test_classrooms_wait_before_lesson(run: Run) -> None:
    for cid, s in run.before.items():
        assert s["state"] == "connected", cid
        assert not s["in_lesson"], cid


def reception(run: Run, cid: str) -> dict[str, Any]:
    rx = run.during[cid]["reception"]
    assert rx is not None, f"{cid} is not receiving"
    return dict(rx)


def test_receiving_classrooms_decode_students_view(run: Run) -> None:
    for cid in RURAL:
        rx = reception(run, cid)
        early = run.early[cid]["reception"]
        assert run.during[cid]["layout"]["view"] == "students_view"
        # Video keeps flowing: at least MIN_FPS sustained over at least 10 s (four media
        # processes share 2 cores here; a quiet machine delivers all 15 fps).
        span_frames = rx["frames_received"] - early["frames_received"]
        assert run.span_s >= 10
        assert span_frames / run.span_s >= MIN_FPS, (cid, span_frames, run.span_s)
        teacher = rx["latency_ms"][MAIN]
        before = early["latency_ms"].get(MAIN, {"timecode_advances": 0})
        assert teacher["timecode_advances"] - before["timecode_advances"] >= 100, teacher
        assert teacher["last_capture_ms"] > before.get("last_capture_ms", 0) + 9000
        assert 0 < teacher["p50_ms"] < 1000, teacher
        # The other receiving classrooms are tiles of the same view.
        assert set(rx["latency_ms"]) == {MAIN, *RURAL}


def test_main_classroom_decodes_teacher_view(run: Run) -> None:
    rx = reception(run, MAIN)
    assert run.during[MAIN]["layout"]["view"] == "teacher_view"
    span_frames = rx["frames_received"] - run.early[MAIN]["reception"]["frames_received"]
    assert span_frames / run.span_s >= MIN_FPS, (span_frames, run.span_s)
    assert set(rx["latency_ms"]) == set(RURAL)
    for cid in RURAL:
        assert rx["latency_ms"][cid]["timecode_advances"] >= 100, rx["latency_ms"][cid]


def test_audio_is_n_minus_1(run: Run) -> None:
    for cid in [MAIN, *RURAL]:
        levels = reception(run, cid)["tone_levels_db"]
        others = [c for c in [MAIN, *RURAL] if c != cid]
        for other in others:
            # Each classroom hears the others' tones well above its own.
            assert levels[other] > levels[cid] + 20, (cid, levels)


def test_one_encode_per_view(run: Run) -> None:
    media = next(iter(run.stats["media"].values()))
    students = media["views"]["students_view"]
    teacher = media["views"]["teacher_view"]
    assert sorted(students["subscribers"]) == sorted(RURAL)
    assert teacher["subscribers"] == [MAIN]
    assert media["encoders_created"] == 2  # one per view, whatever the number of receivers
    for view in (students, teacher):
        enc = view["encoder"]
        assert enc["frames_encoded"] <= view["frames_composed"] + 1
        assert enc["frames_encoded"] >= MIN_FPS * LESSON_S


async def test_unknown_credential_refused(run: Run) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(run.ws_url()) as ws:
        await ws.send_json({"type": "hello", "classroom_id": "hetou-3", "token": "x" * 24})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and reply["code"] == "auth_failed"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

def test_agent_with_wrong_credential_gives_up(run: Run) -> None:
    # The agent with a wrong credential gives up with a clear message and exit code 3.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncclass",
            "agent",
            "--config",
            str(run.dep.config_path),
            "--classroom",
            "hetou-3",
            "--mixer-url",
            run.dep.mixer_url,
            "--token",
            "y" * 24,
            "--control-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "refused this classroom's credential" in proc.stderr


async def test_unpaired_classroom_refused(run: Run) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(run.ws_url()) as ws:
        await ws.send_json({"type": "hello", "classroom_id": OUTSIDER, "token": OUTSIDER_TOKEN})
        welcome = await ws.receive_json(timeout=5)
        assert welcome["type"] == "welcome" and welcome["lesson"] is None
        await ws.send_json({"type": "offer", "sdp": "v=0\r\n" * 10})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and reply["code"] == "not_paired", reply
        await ws.send_json({"type": "start_lesson"})
        reply = await ws.receive_json(timeout=5)
        assert reply["code"] in ("not_allowed", "not_paired"), reply


async def test_malformed_messages_get_errors_lesson_goes_on(run: Run) -> None:
    before = run.dep.agent_status("hetou-3")["reception"]["frames_received"]
    async with aiohttp.ClientSession() as http, http.ws_connect(run.ws_url()) as ws:
        await ws.send_str("{not json")
        assert (await ws.receive_json(timeout=5))["code"] == "bad_json"
        await ws.send_json({"type": "offer", "sdp": "v=0"})
        assert (await ws.receive_json(timeout=5))["code"] == "bad_message"
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=5))["code"] == "auth_required"
        await ws.send_json({"type": "hello", "classroom_id": OUTSIDER, "token": OUTSIDER_TOKEN})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.send_json({"type": "nonsense", "x": 1})
        assert (await ws.receive_json(timeout=5))["code"] == "unknown_type"
        await ws.send_str(
            json.dumps({"type": "stats", "frames_received": 1, "fps": 1, "pad": "x" * 70_000})
        )
        assert (await ws.receive_json(timeout=5))["code"] == "too_large"
        # A real lesson classroom sending a bad SDP gets an error, not a crash.
        await ws.send_json({"type": "ping", "id": 7})
        pong = await ws.receive_json(timeout=5)
        assert pong == {"type": "pong", "id": 7, "server_time_ms": pong["server_time_ms"]}
    await asyncio.sleep(2.0)
    after = run.dep.agent_status("hetou-3")["reception"]["frames_received"]
    assert after > before + 2 * MIN_FPS  # the lesson went on


def test_killed_agent_rejoins_by_itself(run: Run) -> None:
    dep = run.dep
    victim = "shanping-3"
    proc = dep.procs[victim].popen
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    dep.procs.pop(victim)
    t0 = time.monotonic()
    dep.start_agent(victim, out_dir=run.out)

    def rejoined() -> bool:
        rx = dep.agent_status(victim)["reception"]
        return bool(rx) and rx["latency_ms"].get(MAIN, {}).get("timecode_advances", 0) >= 15

    dep.wait_for(rejoined, 30, f"{victim} to rejoin", dep.procs[victim])
    assert time.monotonic() - t0 < 30
    # The others were never disturbed.
    assert dep.agent_status("hetou-3")["in_lesson"]


def test_lesson_end_via_cli_and_outputs(run: Run) -> None:
    dep = run.dep
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncclass",
            "lesson",
            "end",
            "--config",
            str(dep.config_path),
            "--classroom",
            MAIN,
            "--mixer-url",
            dep.mixer_url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "ended"
    members = [MAIN, *RURAL]
    dep.wait_for(
        lambda: all(not dep.agent_status(c)["in_lesson"] for c in members),
        20,
        "classrooms to leave",
    )
    import cv2

    for cid in members:
        summary = json.loads((run.out / f"{cid}.json").read_text(encoding="utf-8"))
        assert summary["frames_received"] > 0
        img = cv2.imread(summary["png"])
        assert img is not None and img.shape == (720, 1280, 3)
        assert float(np.std(img)) > 10  # a real picture, not a blank frame
