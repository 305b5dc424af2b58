"""The mixer's recording publisher against real ZeroMQ sockets (no WebRTC)."""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest
import zmq
import zmq.asyncio

import mixer.publisher as publisher_mod
from mixer.media import LessonMedia
from mixer.publisher import RecordingPublisher
from recorder.wire import Header, LessonMeta, Report
from syncclass.codec import H264Encoder
from syncclass.config import default_config_path, load_config
from syncclass.demo import free_port
from syncclass.lesson import Lesson


async def wait_until(predicate: Any, seconds: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms for up to ``seconds``; its last value."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())



@dataclass
class FakeMedia:
    """The parts of LessonMedia the publisher uses."""

    lesson: Lesson
    media: Any
    views: dict[str, Any]
    t0_epoch_ms: float = field(default_factory=lambda: time.time() * 1000)
    packet_listeners: dict[str, list[Any]] = field(default_factory=dict)
    full_mix_listeners: list[Any] = field(default_factory=list)
    keyframe_requests: int = 0

    def request_keyframe(self, view: str) -> None:
        self.keyframe_requests += 1


def setup(tmp_path: Path, **recorder: Any) -> tuple[RecordingPublisher, FakeMedia, list[Any]]:
    config = load_config(default_config_path())
    rc = config.recorder.model_copy(update={"endpoint": f"tcp://127.0.0.1:{free_port()}",
                                            **recorder})
    config = config.model_copy(update={"recorder": rc})
    events: list[Any] = []
    pub = RecordingPublisher(config, lambda name, lid, cid, **data: events.append(
        (name, lid, data)))
    lesson = Lesson("lesson-1", "shiyan-rural-math", "main-3-1", ["hetou-3", "shanping-3"],
                    "数学", "三年级", "王老师", "math-g3", "live", 1_700_000_000_000)
    media = FakeMedia(lesson, config.media, {"students_view": None, "teacher_view": None},
                      packet_listeners={"students_view": [], "teacher_view": []})
    return pub, media, events


def video_packets(n: int) -> list[av.Packet]:
    enc = H264Encoder(320, 240, 15, 300, 2.0, 0.5, threads=1)
    out = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i % 255, np.uint8),
                                       format="rgb24").reformat(format="yuv420p")
        f.pts = i * 6000
        out += enc.encode(f)
    return out


def mix_frame(pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


async def recv(sock: zmq.asyncio.Socket) -> tuple[Header, bytes]:
    frames = await asyncio.wait_for(sock.recv_multipart(), 5.0)
    return Header.parse(frames[0]), frames[1]


async def test_publishes_view_packets_and_aac_mix_and_relays_reports(tmp_path: Path) -> None:
    pub, media, events = setup(tmp_path)
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.XSUB)
    pub.start()
    try:
        sub.connect(pub.rc.endpoint)
        await sub.send(b"\x01")
        await wait_until(lambda: pub.stats()["recorders_connected"] >= 1)
        pub.attach(cast(LessonMedia, media))
        packets = video_packets(40)
        # The first packet arrives as a P-frame after a join: it is held back until an IDR.
        for listener in media.packet_listeners["students_view"]:
            for p in packets[1:3] + packets:
                listener(p)
        for i in range(20):
            for listener in media.full_mix_listeners:
                listener(mix_frame(i * 960))
        got: dict[str, list[tuple[Header, bytes]]] = {"meta": [], "video": [], "audio": []}
        seqs = []
        while len(got["video"]) < len(packets) or len(got["audio"]) < 15:
            h, payload = await recv(sub)
            got[h.kind].append((h, payload))
            seqs.append(h.seq)
        assert seqs == sorted(seqs)
        meta = LessonMeta.parse(got["meta"][0][1])
        assert meta.teacher == "王老师" and meta.view == "students_view"
        assert {c.id for c in meta.classrooms} == {"main-3-1", "hetou-3", "shanping-3"}
        first = got["video"][0][0]
        assert first.key and first.pts == 0
        assert [p for _, p in got["video"]] == [bytes(p) for p in packets]  # the same bytes
        assert all(p[:2] == b"\xff\xf1" for _, p in got["audio"])  # ADTS AAC
        assert pub.stats()["dropped_gop"] == 2
        # A recorder's report comes back as an event on the mixer's bus.
        await sub.send(Report("recording_ready", "rec:1", "lesson-1",
                              {"mp4": "/x/lesson.mp4"}).to_bytes())
        await wait_until(lambda: any(e[0] == "recording_ready" for e in events))
        assert ("recording_ready", "lesson-1", {"recorder": "rec:1", "mp4": "/x/lesson.mp4"}
                ) in events
        # The recording ends when the lesson did (its metadata's end_ms comes from here),
        # not when the end message was sent (132 ms later in a run, issue 24).
        media.lesson.ended_ms = 1_700_000_040_000
        pub.detach(cast(LessonMedia, media))
        while True:
            h, payload = await recv(sub)
            if h.kind == "end":
                assert json.loads(payload) == {"reason": "lesson_ended",
                                               "ended_ms": 1_700_000_040_000}
                break
    finally:
        sub.close(0)
        ctx.term()
        await pub.aclose()


async def test_slow_recorder_costs_drops_not_waiting(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    pub, media, _ = setup(tmp_path, queue_size=16)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.XSUB)
    sub.setsockopt(zmq.RCVHWM, 16)
    pub.start()
    try:
        sub.connect(pub.rc.endpoint)
        sub.send(b"\x01")
        await wait_until(lambda: pub.stats()["recorders_connected"] >= 1)
        pub.attach(cast(LessonMedia, media))
        packets = video_packets(30)
        listener = media.packet_listeners["students_view"][0]
        caplog.set_level(logging.WARNING)
        for _ in range(100):  # the recorder never reads
            for p in packets:
                listener(p)
            await asyncio.sleep(0.001)
        await wait_until(lambda: not pub.stats()["queued"])
        s = pub.stats()
        assert s["dropped_hwm"] + s["dropped_queue"] > 1000
        assert s["sent"] < 3000
        assert "dropped" in caplog.text
    finally:
        sub.close(0)
        ctx.term()
        await pub.aclose()


async def test_no_recorder_raises_an_alert(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_mod, "ABSENT_GRACE_S", 0.3)
    pub, media, events = setup(tmp_path)
    pub.start()
    try:
        pub.attach(cast(LessonMedia, media))
        await wait_until(lambda: bool(events))
        assert events and events[0][0] == "alert"
        assert events[0][2]["code"] == "recorder_absent"
    finally:
        await pub.aclose()


async def test_endpoint_in_use_is_an_alert_not_a_crash(tmp_path: Path) -> None:
    pub, _, _ = setup(tmp_path)
    pub.start()
    try:
        config = pub.config
        events: list[Any] = []
        second = RecordingPublisher(config, lambda name, lid, cid, **d: events.append((name, d)))
        second.start()
        assert not second.active and second.error and "cannot bind" in second.error
        assert events[0][0] == "alert" and events[0][1]["code"] == "recorder_endpoint"
        await second.aclose()
    finally:
        await pub.aclose()


async def test_new_recorder_gets_the_recent_stream_from_a_keyframe(tmp_path: Path) -> None:
    pub, media, _ = setup(tmp_path, replay_s=30.0)
    ctx = zmq.asyncio.Context()
    first = ctx.socket(zmq.XSUB)
    late = ctx.socket(zmq.XSUB)
    pub.start()
    try:
        first.connect(pub.rc.endpoint)
        await first.send(b"\x01")
        await wait_until(lambda: pub.stats()["recorders_connected"] >= 1)
        pub.attach(cast(LessonMedia, media))
        packets = video_packets(75)  # keyframes at 0, 30, 60 (every 2 s at 15 fps)
        listener = media.packet_listeners["students_view"][0]
        for p in packets:
            listener(p)
        await wait_until(lambda: pub.stats()["sent"] >= 76)
        late.connect(pub.rc.endpoint)
        await late.send(b"\x01")
        got: list[Header] = []
        while len([h for h in got if h.kind == "video"]) < 75:
            got.append((await recv(late))[0])
        video = [h for h in got if h.kind == "video"]
        assert video[0].key and video[0].pts == 0  # the whole lesson so far, from its IDR
        assert [h.pts for h in video] == [int(p.pts or 0) for p in packets]
        assert got[0].kind == "meta"
        assert pub.stats()["replayed"] >= 75
    finally:
        first.close(0)
        late.close(0)
        ctx.term()
        await pub.aclose()
