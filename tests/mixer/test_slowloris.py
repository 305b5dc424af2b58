"""Bad actors on the signaling port: slow (slow-loris) clients, oversized frames, garbage
and malformed SDP, too many connections, sockets that never say hello or never read. The
mixer keeps serving others, drops the bad ones, and leaks no task or descriptor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from mixer.app import create_app
from mixer.guard import GUARD_KEY, WS_CLOSE_AUTH_TIMEOUT, GuardedAppRunner, bounded_send
from syncclass.config import CountyConfig, parse_config
from syncclass.demo import free_port

ROOT = Path(__file__).resolve().parents[2]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_slow_oversized_and_garbage_clients(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["mixer"]["data_dir"] = str(tmp_path)
    data["analytics"] = {"enabled": False}
    data["recorder"] = {"enabled": False}
    config = parse_config(data)
    token = config.classroom("hetou-3").token
    port = free_port()
    runner = GuardedAppRunner(create_app(config))  # what `syncclass mixer` runs
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:  # warm up (lazy imports, pools)
            assert (await http.get(url + "/healthz")).status == 200
        await asyncio.sleep(0.2)
        tasks0, fds0 = len(asyncio.all_tasks()), _fds()

        # 40 slow-loris clients: half a request line each, then a byte now and then.
        slow = []
        for _ in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr")
            slow.append((reader, writer))
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                for _, writer in slow:
                    writer.write(b"a")
                await asyncio.sleep(0.1)
                # Meanwhile a real classroom is served at once.
                async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
                    await ws.send_json({"type": "hello", "classroom_id": "hetou-3",
                                        "token": token})
                    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
                    # Malformed SDP and garbage get error replies; the connection lives.
                    await ws.send_json({"type": "offer", "sdp": "v=0\r\nm=garbage"})
                    reply = await ws.receive_json(timeout=5)
                    assert reply["type"] == "error", reply
                    await ws.send_str("\x00\xff{not json")
                    assert (await ws.receive_json(timeout=5))["code"] == "bad_json"
                    await ws.send_json({"type": "ping", "id": 1})
                    assert (await ws.receive_json(timeout=5))["type"] == "pong"
            # Oversized: a message over the limit gets too_large; a frame far over it is
            # refused with close code 1009 (message too big).
            async with http.ws_connect(url.replace("http", "ws") + "/ws",
                                       max_msg_size=0) as ws:
                await ws.send_str("x" * (config.mixer.max_message_bytes + 10))
                assert (await ws.receive_json(timeout=5))["code"] == "too_large"
                await ws.send_str("x" * (config.mixer.max_message_bytes * 5))
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING), msg
                assert ws.close_code == 1009 or msg.data == 1009
        for _, writer in slow:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        # Everything the bad clients caused is gone again.
        for _ in range(50):
            if len(asyncio.all_tasks()) <= tasks0 and _fds() <= fds0:
                break
            await asyncio.sleep(0.1)
        assert len(asyncio.all_tasks()) <= tasks0, asyncio.all_tasks()
        assert _fds() <= fds0
    finally:
        await runner.cleanup()


def _config(tmp_path: Path, **mixer: object) -> CountyConfig:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["mixer"].update(data_dir=str(tmp_path), **mixer)
    data["analytics"] = {"enabled": False}
    data["recorder"] = {"enabled": False}
    return parse_config(data)


@contextlib.asynccontextmanager
async def _serve(config: CountyConfig) -> AsyncIterator[tuple[web.Application, int]]:
    app = create_app(config)
    runner = GuardedAppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, port
    finally:
        await runner.cleanup()


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    with contextlib.suppress(ConnectionError):
        return await reader.read(-1)
    return b""


async def test_slow_headers_are_dropped_at_the_deadline(tmp_path: Path) -> None:
    config = _config(tmp_path, header_timeout_s=1.0)
    async with _serve(config) as (app, port), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}"
        assert (await http.get(url + "/healthz")).status == 200  # warm up
        await asyncio.sleep(0.2)
        fds0 = _fds()
        loop = asyncio.get_running_loop()
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        started = loop.time()
        for _, writer in slow:
            writer.write(b"GET /api/lessons HTTP/1.1\r\nHost: x\r\nX-Pad")

        async def trickle() -> None:  # a byte every 0.2 s: never a complete header block
            with contextlib.suppress(ConnectionError, RuntimeError):
                while True:
                    await asyncio.sleep(0.2)
                    for _, writer in slow:
                        if not writer.is_closing():
                            writer.write(b"a")

        feeder = asyncio.ensure_future(trickle())
        try:
            # Meanwhile a real client is served, on a fresh and on a kept-alive connection.
            for _ in range(3):
                async with http.get(url + "/healthz") as resp:
                    assert resp.status == 200
            answers = await asyncio.wait_for(
                asyncio.gather(*(_closed(reader) for reader, _ in slow)), 15)
            dropped_after = loop.time() - started
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        assert all(a.startswith(b"HTTP/1.1 408 Request Timeout") for a in answers), answers[0]
        assert dropped_after >= config.mixer.header_timeout_s
        assert app[GUARD_KEY].stats.header_timeouts == 40
        # A client that connects and sends nothing at all is dropped as well.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await asyncio.wait_for(_closed(reader), 15)).startswith(b"HTTP/1.1 408")
        assert (await http.get(url + "/healthz")).status == 200
        for _, w in [*slow, (reader, writer)]:
            w.close()
        for _ in range(50):
            if _fds() <= fds0:
                break
            await asyncio.sleep(0.1)
        assert _fds() <= fds0


async def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    config = _config(tmp_path, max_connections_per_client=5, header_timeout_s=30)
    async with _serve(config) as (app, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(_closed(reader), 10)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        writer.close()
        assert app[GUARD_KEY].stats.refused_connections == 1
        # One of the held connections makes a real request on it; then it goes away and a
        # new connection is served again.
        r0, w0 = held.pop()
        w0.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(_closed(r0), 10)).startswith(b"HTTP/1.1 200")
        w0.close()
        for _ in range(50):
            if app[GUARD_KEY].connections_of("127.0.0.1") < 5:
                break
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status == 200
        for _, w in held:
            w.close()


async def test_websocket_without_hello_is_closed(tmp_path: Path) -> None:
    config = _config(tmp_path, hello_timeout_s=1.0)
    token = config.classroom("hetou-3").token
    async with _serve(config) as (app, port), aiohttp.ClientSession() as http:
        ws_url = f"ws://127.0.0.1:{port}/ws"
        async with http.ws_connect(ws_url) as silent, http.ws_connect(ws_url) as good:
            await good.send_json({"type": "hello", "classroom_id": "hetou-3", "token": token})
            assert (await good.receive_json(timeout=5))["type"] == "welcome"
            error = await silent.receive_json(timeout=10)
            assert error["type"] == "error" and error["code"] == "auth_timeout", error
            msg = await silent.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            assert silent.close_code == WS_CLOSE_AUTH_TIMEOUT
            # The one that said hello in time is still served after the deadline.
            await good.send_json({"type": "ping", "id": 7})
            assert (await good.receive_json(timeout=5))["type"] == "pong"
        assert app[GUARD_KEY].stats.hello_timeouts == 1


async def test_a_socket_that_never_reads_is_dropped_and_holds_up_nobody() -> None:
    """:func:`bounded_send` on real sockets: 64 KiB messages to a client that never reads
    fill every buffer; the send gives up after its timeout and drops that client, while
    another client keeps receiving the same messages."""
    sent: dict[str, list[bool]] = {"stuck": [], "good": []}
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        who = request.query["who"]
        for _ in range(200):  # 12.8 MB: far more than any socket buffer holds
            ok = await bounded_send(ws, "x" * 65536, 1.0, request.transport, who)
            sent[who].append(ok)
            if not ok:
                break
        if who == "stuck":
            done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws?who=stuck HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        # From here on the stuck client reads nothing.
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"ws://127.0.0.1:{port}/ws?who=good") as good:
            received = 0
            while received < 200:
                msg = await good.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                received += 1
            await asyncio.wait_for(done.wait(), 30)
        assert sent["good"] == [True] * 200
        assert sent["stuck"][-1] is False and len(sent["stuck"]) < 200, len(sent["stuck"])
        writer.close()
    finally:
        await runner.cleanup()


async def test_bounded_send_cancelled_as_its_send_completes_stays_cancelled() -> None:
    # On Python 3.11 asyncio.wait_for swallows a cancellation that arrives in the step its
    # awaitable completes: an observer's layout sender, cancelled when its socket closed,
    # then ran on and held its media subscribed until ICE failed ~60 s later (1 disconnect
    # in ~20 during ICE checks). bounded_send must let the cancellation through.
    class Socket:
        closed = False

        def __init__(self) -> None:
            self.taken = asyncio.Event()

        async def send_str(self, text: str) -> None:
            await self.taken.wait()

    outcomes = []
    for _ in range(50):
        ws = Socket()
        task = asyncio.ensure_future(
            bounded_send(ws, "{}", 5.0, None, "test"))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the send is under way
        ws.taken.set()  # it completes ...
        task.cancel()  # ... as its owner cancels it
        try:
            outcomes.append(await task)
        except asyncio.CancelledError:
            outcomes.append("cancelled")
    assert outcomes == ["cancelled"] * 50, outcomes
