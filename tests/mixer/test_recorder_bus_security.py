"""The recorder bus under attack (issue 18, item 1): CURVE keys admit only the configured
recorders; forged subscriptions, reports, alerts and paths change nothing; per-peer state
and log lines stay bounded. Real ZeroMQ sockets, in process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
import zmq
import zmq.asyncio
from pydantic import SecretStr

import mixer.publisher as publisher_mod
from mixer.media import LessonMedia
from recorder.service import Recorder
from syncclass.cli import main
from syncclass.config import (
    CurveConfig,
    RecorderConfig,
    RecorderKeyConfig,
    default_config_path,
    parse_config,
)
from syncclass.errors import ConfigError, RecordingError
from syncclass.recorder_wire import Header, Report
from tests.mixer.test_publisher import setup, video_packets, wait_until

Keys = dict[str, tuple[bytes, bytes]]


def make_curve(*names: str) -> tuple[CurveConfig, tuple[bytes, bytes], Keys]:
    """A mixer keypair and one keypair per recorder name, as ``recorder.curve``."""
    mixer_pub, mixer_sec = zmq.curve_keypair()
    recorders = {n: zmq.curve_keypair() for n in names}
    curve = CurveConfig(
        mixer_public_key=mixer_pub.decode(), mixer_secret_key=SecretStr(mixer_sec.decode()),
        recorders=[RecorderKeyConfig(name=n, public_key=p.decode())
                   for n, (p, _) in recorders.items()])
    return curve, (mixer_pub, mixer_sec), recorders


def client(ctx: zmq.asyncio.Context, endpoint: str, server_public: bytes | None = None,
           keypair: tuple[bytes, bytes] | None = None) -> zmq.asyncio.Socket:
    """An XSUB peer: plain (no keys), or a CURVE client with ``keypair``."""
    sock = ctx.socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    if keypair is not None and server_public is not None:
        sock.curve_publickey, sock.curve_secretkey = keypair
        sock.curve_serverkey = server_public
    sock.connect(endpoint)
    return sock


async def received(sock: zmq.asyncio.Socket, seconds: float) -> int:
    """Messages ``sock`` receives within ``seconds``."""
    n = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        if await sock.poll(int(left * 1000)):
            await sock.recv_multipart()
            n += 1
    return n


async def test_only_configured_recorders_connect(tmp_path: Path) -> None:
    curve, (mixer_pub, _), keys = make_curve("rec-a")
    pub, media, events = setup(tmp_path, curve=curve)
    ctx = zmq.asyncio.Context()
    good = client(ctx, pub.rc.endpoint, mixer_pub, keys["rec-a"])
    plain = client(ctx, pub.rc.endpoint)
    stranger = client(ctx, pub.rc.endpoint, mixer_pub, zmq.curve_keypair())
    forged = [Report("alert", "rec-a", "lesson-1", {"code": "forged", "message": "x"}),
              Report("recording_ready", "rec-a", "lesson-1", {"folder": str(tmp_path / "x")}),
              Report("hello", "rec-a")]
    pub.start()
    try:
        assert pub.stats()["authenticated"]
        for sock in (good, plain, stranger):
            await sock.send(b"\x01")
        for sock in (plain, stranger):
            for _ in range(20):
                await sock.send(b"\x01")
            for report in forged:
                await sock.send(report.to_bytes())
        await good.send(Report("hello", "host:1").to_bytes())
        assert await wait_until(lambda: pub.stats()["recorders"] == ["rec-a"])
        pub.attach(cast(LessonMedia, media))
        listener = media.packet_listeners["students_view"][0]
        for p in video_packets(20):
            listener(p)
        frames = await asyncio.wait_for(good.recv_multipart(), 5)
        assert Header.parse(frames[0]).kind == "meta"
        # Peers without a listed key fail the handshake: no media, no metadata ...
        assert await received(plain, 1.0) == 0
        assert await received(stranger, 0.2) == 0
        # ... and nothing they sent reached the mixer's bus.
        assert not any(e[0] in ("alert", "recording_ready") for e in events)
        assert pub.stats()["recorders_connected"] == 1 and not pub.ready
        # The configured recorder's reports do; they carry its configured name.
        await good.send(Report("alert", "claims-to-be-other", "lesson-1",
                               {"code": "recording_disk_full", "message": "disk"}).to_bytes())
        assert await wait_until(lambda: any(e[0] == "alert" for e in events))
        alert = next(e for e in events if e[0] == "alert")
        assert alert[2]["recorder"] == "rec-a" and alert[2]["code"] == "recording_disk_full"
    finally:
        for sock in (good, plain, stranger):
            sock.close(0)
        ctx.term()
        await pub.aclose()


async def test_forged_subscriptions_neither_count_nor_replay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """79 subscription frames (no keys, loopback) are no recorder: the no-recorder alert
    still fires, and the recent stream is replayed once, not 79 times."""
    monkeypatch.setattr(publisher_mod, "ABSENT_GRACE_S", 0.5)
    pub, media, events = setup(tmp_path, replay_s=30.0)
    ctx = zmq.asyncio.Context()
    sock = client(ctx, pub.rc.endpoint)
    pub.start()
    try:
        pub.attach(cast(LessonMedia, media))
        packets = video_packets(30)
        for p in packets:
            media.packet_listeners["students_view"][0](p)
        await asyncio.sleep(0.2)
        for _ in range(79):
            await sock.send(b"\x01")
        assert await wait_until(lambda: any(
            e[0] == "alert" and e[2].get("code") == "recorder_absent" for e in events))
        stats = pub.stats()
        assert stats["recorders_connected"] == 0
        # One replay of the kept stream, and at most one more deferred to the interval's end.
        assert stats["replayed"] <= 2 * len(packets)
    finally:
        sock.close(0)
        ctx.term()
        await pub.aclose()


async def test_repeated_forged_subscriptions_do_not_hide_the_alert(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscription frame every 0.1 s (faster than the grace) neither counts as a
    recorder nor restarts the no-recorder timer."""
    monkeypatch.setattr(publisher_mod, "ABSENT_GRACE_S", 1.0)
    monkeypatch.setattr(publisher_mod, "REPLAY_MIN_INTERVAL_S", 0.1)
    pub, media, events = setup(tmp_path)
    ctx = zmq.asyncio.Context()
    sock = client(ctx, pub.rc.endpoint)
    pub.start()
    try:
        pub.attach(cast(LessonMedia, media))
        loop = asyncio.get_running_loop()
        end = loop.time() + 6.0
        while loop.time() < end and not any(
                e[0] == "alert" and e[2].get("code") == "recorder_absent" for e in events):
            await sock.send(b"\x01")
            await asyncio.sleep(0.1)
        assert any(e[0] == "alert" and e[2].get("code") == "recorder_absent" for e in events)
    finally:
        sock.close(0)
        ctx.term()
        await pub.aclose()


async def test_authenticated_recorder_counts_once(tmp_path: Path) -> None:
    curve, (mixer_pub, _), keys = make_curve("rec-a", "rec-b")
    pub, media, _ = setup(tmp_path, curve=curve, replay_s=30.0)
    ctx = zmq.asyncio.Context()
    sock = client(ctx, pub.rc.endpoint, mixer_pub, keys["rec-a"])
    pub.start()
    try:
        pub.attach(cast(LessonMedia, media))
        packets = video_packets(30)
        for p in packets:
            media.packet_listeners["students_view"][0](p)
        await asyncio.sleep(0.2)
        for _ in range(79):
            await sock.send(b"\x01")
        assert await wait_until(lambda: pub.stats()["recorders_connected"] == 1)
        await asyncio.sleep(0.5)
        stats = pub.stats()
        assert stats["recorders"] == ["rec-a"]
        assert stats["replayed"] <= 2 * len(packets)
    finally:
        sock.close(0)
        ctx.term()
        await pub.aclose()


async def test_forged_reports_are_bounded_and_quiet(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """2,000 ``recording_ready`` reports keep at most READY_KEEP; 2,000 bad reports log a
    handful of lines; a lesson id that is a path is refused."""
    pub, _, events = setup(tmp_path)
    ctx = zmq.asyncio.Context()
    sock = client(ctx, pub.rc.endpoint)
    caplog.set_level(logging.INFO, logger="mixer.publisher")
    pub.start()
    try:
        for i in range(2000):
            await sock.send(Report("recording_ready", "x", f"lesson-{i}", {}).to_bytes())
            if i % 200 == 199:  # XSUB drops upstream messages past its high-water mark
                await asyncio.sleep(0.05)
        for i in range(2000):
            await sock.send(b'{"kind": "nonsense"}')
            if i % 200 == 199:
                await asyncio.sleep(0.05)
        await sock.send(b'{"kind": "recording_ready", "lesson": "../../x", "data": {}}')
        await sock.send(Report("recording_ready", "x", "last", {}).to_bytes())
        assert await wait_until(lambda: any(e[1] == "last" for e in events), 10)
        assert len(pub.ready) <= 200  # publisher.READY_KEEP
        assert "last" in pub.ready and "lesson-0" not in pub.ready
        assert "../../x" not in pub.ready and all(e[1] != "../../x" for e in events)
        lines = [r for r in caplog.records if r.name == "mixer.publisher"
                 and r.levelno >= logging.WARNING]
        assert 1 <= len(lines) <= 5, [r.getMessage() for r in lines]
        assert sum(e[0] == "recording_ready" for e in events) > 1000  # relayed, not kept
    finally:
        sock.close(0)
        ctx.term()
        await pub.aclose()


def _sample(recorder: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    data["recorder"] = recorder
    return dict(data)


def test_keys_are_required_off_loopback_and_secrets_hidden(
        capsys: pytest.CaptureFixture[str]) -> None:
    for endpoint in ("tcp://0.0.0.0:8710", "tcp://*:8710", "tcp://10.1.2.3:8710",
                     "tcp://recorder.example:8710"):
        with pytest.raises(ConfigError, match="recorder-keys"):
            parse_config(_sample({"endpoint": endpoint}))
    for endpoint in ("tcp://127.0.0.1:8710", "tcp://localhost:8710", "tcp://[::1]:8710",
                     "ipc:///run/syncclass/rec"):
        parse_config(_sample({"endpoint": endpoint}))
    assert main(["recorder-keys", "--name", "rec-a", "--name", "rec-b"]) == 0
    printed = capsys.readouterr().out
    section = yaml.safe_load(printed)["recorder"]
    config = parse_config(_sample({**section, "endpoint": "tcp://0.0.0.0:8710"}))
    curve = config.recorder.curve
    assert curve is not None and [r.name for r in curve.recorders] == ["rec-a", "rec-b"]
    assert curve.mixer_secret_key is not None and curve.recorder_secret_key is not None
    for secret in (curve.mixer_secret_key, curve.recorder_secret_key):
        assert secret.get_secret_value() not in repr(config)
        assert secret.get_secret_value() not in config.model_dump_json()
    # A secret that is not the pair of the public key is refused at load.
    wrong = dict(section["curve"], mixer_public_key=curve.recorders[0].public_key)
    with pytest.raises(ConfigError, match="mixer_secret_key"):
        parse_config(_sample({"curve": wrong}))
    # Keys that fit the pattern but are no keys are refused with a message, not a crash.
    for bad in ({"mixer_public_key": "#" * 40},
                {"mixer_public_key": curve.mixer_public_key, "recorder_secret_key": "#" * 40}):
        with pytest.raises(ConfigError, match="not a"):
            parse_config(_sample({"curve": bad}))
    # A command-line endpoint is checked too.
    assert main(["recorder", "--recorder-endpoint", "tcp://0.0.0.0:8711"]) == 2
    assert "recorder-keys" in capsys.readouterr().err


async def test_no_keys_off_loopback_refused_at_start(tmp_path: Path) -> None:
    pub, _, events = setup(tmp_path, endpoint="tcp://0.0.0.0:0")
    pub.start()
    assert not pub.active and pub.error and "recorder.curve" in pub.error
    assert events[0][2]["code"] == "recorder_endpoint"
    await pub.aclose()
    rc = RecorderConfig().model_copy(update={"endpoint": "tcp://0.0.0.0:8712",
                                             "out_dir": str(tmp_path / "out")})
    rec = Recorder(rc)
    with pytest.raises(RecordingError, match=r"recorder\.curve"):
        await rec.start()
    rec._ctx.term()


async def test_recorder_with_keys_records_and_wrong_mixer_key_gets_nothing(
        tmp_path: Path) -> None:
    """The real recorder as a CURVE client; one pinned to another mixer key hears nothing."""
    curve, (mixer_pub, _), keys = make_curve("rec-a")
    pub, media, _ = setup(tmp_path, curve=curve)

    def recorder_cfg(name: str, mixer_public: str) -> RecorderConfig:
        mine = CurveConfig(mixer_public_key=mixer_public,
                           recorder_secret_key=SecretStr(keys["rec-a"][1].decode()))
        return pub.rc.model_copy(update={
            "curve": mine, "out_dir": str(tmp_path / name / "out"),
            "spool_dir": str(tmp_path / name / "spool"),
            "archive_dir": str(tmp_path / name / "archive")})

    good = Recorder(recorder_cfg("good", mixer_pub.decode()), name="good")
    fooled = Recorder(recorder_cfg("fooled", zmq.curve_keypair()[0].decode()), name="fooled")
    pub.start()
    try:
        await good.start()
        await fooled.start()
        assert await wait_until(lambda: pub.stats()["recorders"] == ["rec-a"])
        pub.attach(cast(LessonMedia, media))
        for p in video_packets(40):
            media.packet_listeners["students_view"][0](p)
        assert await wait_until(lambda: "lesson-1" in good.live and good.messages > 20)
        assert fooled.messages == 0 and not fooled.live
        lesson_dir = tmp_path / "good" / "out" / "lesson-1"
        assert lesson_dir.is_dir() and (lesson_dir / "meta.json").is_file()
    finally:
        await good.aclose()
        await fooled.aclose()
        await pub.aclose()
