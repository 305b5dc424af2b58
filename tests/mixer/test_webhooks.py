"""Webhooks against a real aiohttp receiver on loopback that verifies the signature."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from mixer.webhooks import WebhookSender
from syncclass.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook
from syncclass.config import WebhookConfig
from syncclass.events import Event, EventBus

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    fail_next: int = 0
    """Answer this many requests with 503 before accepting."""
    status_always: int | None = None
    attempts_by_id: dict[str, int] = field(default_factory=dict)
    got: asyncio.Event = field(default_factory=asyncio.Event)
    delay_s: float = 0.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver(url="")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_webhook(SECRET.encode(), body, request.headers.get(TIMESTAMP_HEADER),
                              request.headers.get(SIGNATURE_HEADER), time.time()):
            rx.bad_signatures += 1
            return web.Response(status=401)
        payload = json.loads(body)
        assert request.headers["X-Syncclass-Delivery"] == payload["id"]
        assert request.headers["X-Syncclass-Event"] == payload["event"]
        rx.attempts_by_id[payload["id"]] = rx.attempts_by_id.get(payload["id"], 0) + 1
        if rx.delay_s:
            await asyncio.sleep(rx.delay_s)
        if rx.status_always is not None:
            return web.Response(status=rx.status_always)
        if rx.fail_next > 0:
            rx.fail_next -= 1
            return web.Response(status=503)
        rx.received.append(payload)
        rx.got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"http://127.0.0.1:{port}/hook"
    yield rx
    await runner.cleanup()


def config(url: str, **kw: Any) -> WebhookConfig:
    return WebhookConfig(url=url, secret=SECRET, **kw)


async def wait_for(pred: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_delivers_signed_selected_events(receiver: Receiver) -> None:
    bus = EventBus()
    sender = WebhookSender(config(receiver.url, events=["alert", "recording_ready"]), bus)
    sender.start()
    try:
        bus.emit(Event("classroom_joined", 1, "L1", "hetou-3"))  # not subscribed
        bus.emit(Event("alert", 2, "L1", "hetou-3", {"kind": "latency", "value": 512.5,
                                                      "message": "延迟 high"}))
        bus.emit(Event("recording_ready", 3, "L1", None, {"path": "/archive/L1.mp4"}))
        await wait_for(lambda: len(receiver.received) == 2)
    finally:
        await sender.aclose()
    first, second = receiver.received
    assert first["event"] == "alert" and first["classroom_id"] == "hetou-3"
    assert first["data"] == {"kind": "latency", "value": 512.5, "message": "延迟 high"}
    assert second["event"] == "recording_ready" and second["data"]["path"] == "/archive/L1.mp4"
    assert receiver.bad_signatures == 0
    assert sender.delivered == 2 and sender.failed == 0


async def test_retries_with_backoff_then_delivers(receiver: Receiver) -> None:
    receiver.fail_next = 2
    bus = EventBus()
    sender = WebhookSender(config(receiver.url, events=["*"]), bus, backoff_initial_s=0.05)
    sender.start()
    try:
        bus.emit(Event("report_ready", 1, "L1", None, {"pages": 3}))
        await wait_for(lambda: len(receiver.received) == 1)
    finally:
        await sender.aclose()
    (delivery_id, attempts), = receiver.attempts_by_id.items()
    assert attempts == 3  # same delivery id on every retry
    assert receiver.received[0]["id"] == delivery_id
    assert sender.attempts == 3 and sender.delivered == 1


async def test_gives_up_on_client_error_and_after_max_attempts(receiver: Receiver) -> None:
    bus = EventBus()
    receiver.status_always = 400
    sender = WebhookSender(config(receiver.url, max_attempts=3), bus, backoff_initial_s=0.02)
    sender.start()
    try:
        bus.emit(Event("alert", 1, "L1", "a"))
        await wait_for(lambda: sender.failed == 1)
        assert sender.attempts == 1  # a 4xx is not retried
        receiver.status_always = 500
        bus.emit(Event("alert", 2, "L1", "a"))
        await wait_for(lambda: sender.failed == 2)
        assert sender.attempts == 1 + 3
    finally:
        await sender.aclose()


async def test_unreachable_url_never_blocks_the_emitter() -> None:
    bus = EventBus()
    # Port 9 on loopback: nothing listens, connections are refused.
    sender = WebhookSender(config("http://127.0.0.1:9/hook", queue_size=5, max_attempts=2),
                           bus, backoff_initial_s=0.05)
    sender.start()
    try:
        for i in range(50):
            bus.emit(Event("alert", i, "L1", "a"))
        # emit() only queued: no delivery was attempted inside the emitting call.
        assert sender.attempts == 0
        assert sender.pending <= 5
        assert sender.dropped >= 50 - 5 - 1  # bounded queue: oldest dropped and counted
        await wait_for(lambda: sender.failed >= 1)
    finally:
        await sender.aclose(drain_s=0.1)


async def test_bad_secret_is_refused_by_receiver(receiver: Receiver) -> None:
    bus = EventBus()
    sender = WebhookSender(WebhookConfig(url=receiver.url, secret="not-the-right-secret-x",
                                         max_attempts=1), bus)
    sender.start()
    try:
        bus.emit(Event("alert", 1, "L1", "a"))
        await wait_for(lambda: sender.failed == 1)
    finally:
        await sender.aclose()
    assert receiver.bad_signatures == 1 and receiver.received == []
