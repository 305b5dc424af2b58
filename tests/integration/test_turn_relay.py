"""TURN with a real coturn (``scripts/turnserver.sh``) on loopback: aiortc media relayed
over TCP and TLS, expired credentials refused, the agent's probe order, and the mixer's
``welcome`` credentials and advertised addresses.

The pure parts are in ``tests/core/test_turn.py``; a classroom behind a school NAT in
``tests/integration/test_turn_nat.py``.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import hashlib
import hmac
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.mediastreams import AudioStreamTrack

import edge_agent.turn
from edge_agent.turn import choose_turn_server
from mixer.app import create_app
from syncclass.config import TurnConfig, load_config
from syncclass.protocol import IceServer
from syncclass.rtc import (
    audio_frame_to_mono,
    new_peer_connection,
    selected_ice_pair,
    turn_ssl_context,
    use_host_addresses,
    use_turn_ca_file,
)
from syncclass.testing.turn_support import SECRET, Coturn, free_port
from syncclass.turn import ice_servers_for
from tests.core.test_config import SAMPLE

RELAY_ONLY = RTCIceTransportPolicy.RELAY

# -- a real coturn -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    server = Coturn(tmp_path_factory.mktemp("coturn"), allow_loopback_peers=True)
    try:
        yield server
    finally:
        server.close()


def _servers(coturn: Coturn, *urls: str, lifetime_s: int = 600,
             now_s: float | None = None) -> list[IceServer]:
    cfg = TurnConfig(urls=list(urls), secret=SECRET, credential_lifetime_s=lifetime_s)
    return ice_servers_for(cfg, "hetou-3", time.time() if now_s is None else now_s)


async def test_choose_turn_server_probes_in_order(coturn: Coturn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The order is the point here: give every URL the whole probe time, so a loaded
    # machine answering UDP late does not pick TCP (the grace is measured in
    # benchmarks/turn_join.py).
    monkeypatch.setattr(edge_agent.turn, "GRACE_MIN_S", edge_agent.turn.PROBE_TIMEOUT_S)
    dead_udp = f"turn:127.0.0.1:{free_port(socket.SOCK_DGRAM)}?transport=udp"
    dead_tcp = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    udp = f"turn:127.0.0.1:{coturn.port}?transport=udp"
    tcp = f"turn:127.0.0.1:{coturn.port}?transport=tcp"
    tls = f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp"
    ctx = ssl.create_default_context(cafile=coturn.ca_file)
    picked = await choose_turn_server(_servers(coturn, udp, tcp, tls), ctx)
    assert [s.urls for s in picked] == [udp]
    picked = await choose_turn_server(_servers(coturn, dead_udp, dead_tcp, tls, tcp), ctx)
    assert [s.urls for s in picked] == [tls]
    assert picked[0].username and picked[0].credential
    # A certificate the agent does not trust is no way through.
    picked = await choose_turn_server(_servers(coturn, tls, tcp), ssl.create_default_context())
    assert [s.urls for s in picked] == [tcp]
    assert await choose_turn_server([], ctx) == []


class _Tone(AudioStreamTrack):
    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz, self.n = hz, 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0.02)
        t = (np.arange(960) + self.n * 960) / 48000
        block = (np.sin(2 * np.pi * self.hz * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(block[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self.n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 1
        return frame


async def _relayed_tone(ice: list[RTCIceServer], timeout_s: float = 10.0) -> dict[str, Any]:
    """A relay-only peer (as behind a firewall) sends a 700 Hz tone to a host-only peer."""
    use_host_addresses(["127.0.0.1"])
    sender = RTCPeerConnection(RTCConfiguration(iceServers=ice,
                                                iceTransportPolicy=RELAY_ONLY))
    receiver = new_peer_connection()
    got: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    receiver.on("track", got.put_nowait)
    try:
        sender.addTrack(_Tone(700.0))
        await sender.setLocalDescription(await sender.createOffer())
        offer = sender.localDescription.sdp
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        track = await asyncio.wait_for(got.get(), timeout_s)
        frames = [await asyncio.wait_for(track.recv(), timeout_s) for _ in range(25)]
        samples = np.concatenate([audio_frame_to_mono(f) for f in frames[5:]])
        spectrum = np.abs(np.fft.rfft(samples))
        return {"offer": offer, "pair": selected_ice_pair(sender),
                "peak_hz": float(np.argmax(spectrum) * 48000 / len(samples))}
    finally:
        await sender.close()
        await receiver.close()
        use_host_addresses(None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_media_relayed_through_coturn(coturn: Coturn, transport: str) -> None:
    url = (f"turn:127.0.0.1:{coturn.port}?transport=tcp" if transport == "tcp"
           else f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp")
    use_turn_ca_file(coturn.ca_file)
    try:
        ice = await choose_turn_server(_servers(coturn, url), turn_ssl_context())
        result = await _relayed_tone(ice)
    finally:
        use_turn_ca_file(None)
    assert " typ relay " in result["offer"] and " typ host " not in result["offer"]
    assert result["pair"] == {"local": "relay", "remote": "host"}, result["pair"]
    assert abs(result["peak_hz"] - 700.0) < 5, result["peak_hz"]


async def test_expired_credentials_get_no_relay(coturn: Coturn) -> None:
    url = f"turn:127.0.0.1:{coturn.port}?transport=tcp"
    servers = _servers(coturn, url, lifetime_s=600, now_s=time.time() - 3600)
    ice = [RTCIceServer(urls=url, username=servers[0].username,
                        credential=servers[0].credential)]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice, iceTransportPolicy=RELAY_ONLY))
    try:
        pc.addTrack(_Tone(700.0))
        await pc.setLocalDescription(await pc.createOffer())
        assert " typ relay " not in pc.localDescription.sdp
    finally:
        await pc.close()


# -- the mixer hands credentials out and advertises its public address ------------------------
async def test_mixer_welcome_credentials_and_advertised_answer() -> None:
    base = load_config(SAMPLE)
    turn = TurnConfig(urls=["turn:turn.example.org:3478?transport=tcp",
                            "turns:turn.example.org:443?transport=tcp"],
                      secret=SECRET, credential_lifetime_s=7200)
    mixer = base.mixer.model_copy(update={
        "turn": turn, "ice_host_addresses": ["127.0.0.1"],
        "ice_advertised_addresses": {"127.0.0.1": "203.0.113.7"}})
    config = base.model_copy(update={"mixer": mixer})
    tokens = {c.id: c.token for c in config.classrooms}
    use_host_addresses(["127.0.0.1"])
    pc = new_peer_connection()
    try:
        async with TestClient(TestServer(create_app(config))) as client, \
                client.ws_connect("/ws") as main, client.ws_connect("/ws") as rural:
            await main.send_json({"type": "hello", "classroom_id": "main-3-1",
                                  "token": tokens["main-3-1"]})
            t0 = time.time()
            await rural.send_json({"type": "hello", "classroom_id": "hetou-3",
                                   "token": tokens["hetou-3"]})
            assert (await main.receive_json(timeout=5))["type"] == "welcome"
            welcome = await rural.receive_json(timeout=5)
            [server] = welcome["ice_servers"]
            assert server["urls"] == turn.urls
            expiry, user = server["username"].split(":")
            assert user == "hetou-3" and abs(int(expiry) - (t0 + 7200)) <= 2
            # coturn's REST-API check, done independently of syncclass.turn.
            mac = hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1)
            assert server["credential"] == base64.b64encode(mac.digest()).decode()
            assert SECRET not in json.dumps(welcome)

            await main.send_json({"type": "start_lesson"})
            while (await rural.receive_json(timeout=5))["type"] != "lesson_state":
                pass
            pc.addTrack(_Tone(440.0))
            await pc.setLocalDescription(await pc.createOffer())
            await rural.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
            while (msg := await rural.receive_json(timeout=10))["type"] != "answer":
                pass
            candidates = [line for line in msg["sdp"].splitlines()
                          if line.startswith("a=candidate:")]
            assert candidates and all(" 203.0.113.7 " in c for c in candidates), candidates
            assert "c=IN IP4 203.0.113.7" in msg["sdp"]
    finally:
        await pc.close()
        use_host_addresses(None)
