"""The recorder bus of a node with two media workers (issue 20): each worker publishes on
its own endpoint with the county's CURVE keys, one recorder connects to both, is counted
by its configured name on both, and records a lesson that runs on worker 1; a peer with
another key gets nothing from worker 1 either. Real ZeroMQ sockets, in process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import zmq
import zmq.asyncio
from pydantic import SecretStr

from mixer.media import LessonMedia
from mixer.node import worker_config
from mixer.publisher import RecordingPublisher
from recorder.service import Recorder
from syncclass.config import CurveConfig, default_config_path, load_config
from syncclass.demo import free_port
from syncclass.workers import recorder_endpoints
from tests.mixer.test_publisher import setup, video_packets, wait_until
from tests.mixer.test_recorder_bus_security import client, make_curve, received


async def test_recorder_hears_every_worker(tmp_path: Path) -> None:
    curve, (mixer_pub, _), keys = make_curve("rec-a")
    config = load_config(default_config_path())
    base = f"tcp://127.0.0.1:{free_port()}"
    config = config.model_copy(update={"recorder": config.recorder.model_copy(
        update={"endpoint": base, "curve": curve})})
    events: list[Any] = []
    pubs = [RecordingPublisher(worker_config(config, i, "s" * 64, "t" * 32),
                               lambda name, lid, cid, **data: events.append((name, lid, data)))
            for i in range(2)]
    assert [p.rc.endpoint for p in pubs] == recorder_endpoints(base, 2)
    mine = CurveConfig(mixer_public_key=mixer_pub.decode(),
                       recorder_secret_key=SecretStr(keys["rec-a"][1].decode()))
    rc = config.recorder.model_copy(update={
        "curve": mine, "out_dir": str(tmp_path / "out"), "spool_dir": str(tmp_path / "spool"),
        "archive_dir": str(tmp_path / "archive")})
    rec = Recorder(rc, name="rec-a", endpoints=recorder_endpoints(base, 2))
    ctx = zmq.asyncio.Context()
    stranger = client(ctx, pubs[1].rc.endpoint, mixer_pub, zmq.curve_keypair())
    for p in pubs:
        p.start()
    try:
        await rec.start()
        await stranger.send(b"\x01")
        assert await wait_until(lambda: all(p.stats()["recorders"] == ["rec-a"] for p in pubs))
        # The lesson runs on worker 1 (setup's own publisher is never started).
        _, media, _ = setup(tmp_path)
        pubs[1].attach(cast(LessonMedia, media))
        for pkt in video_packets(40):
            media.packet_listeners["students_view"][0](pkt)
        assert await wait_until(lambda: "lesson-1" in rec.live and rec.messages > 20)
        assert (tmp_path / "out" / "lesson-1" / "meta.json").is_file()
        assert await received(stranger, 0.5) == 0
        assert pubs[1].stats()["recorders"] == ["rec-a"]
    finally:
        stranger.close(0)
        ctx.term()
        await rec.aclose()
        for p in pubs:
            await p.aclose()
