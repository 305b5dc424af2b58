"""Webhooks: POST chosen lesson events as signed JSON to a configured URL.

Generic over event names: ``alert`` from :mod:`mixer.alerts`, and whatever other
subsystems emit on ``mixer.events`` (``recording_ready``, ``report_ready``, ...).

- Body: ``{"id", "event", "ts_ms", "lesson_id", "classroom_id", "data"}`` (UTF-8 JSON).
- Headers: ``X-Syncclass-Event``, ``X-Syncclass-Delivery`` (unique id, the same on every
  retry), ``X-Syncclass-Timestamp`` (epoch s) and ``X-Syncclass-Signature: sha256=<hex>``,
  HMAC-SHA256 of ``"<timestamp>." + body`` with the webhook's secret
  (see :func:`syncclass.auth.verify_webhook`).
- Delivery never blocks the lesson: the bus callback only puts into a bounded queue (when
  full the oldest event is dropped and counted); one task per webhook sends, retrying
  connection errors, timeouts, 429 and 5xx with exponential backoff (0.5 s doubling, at most
  30 s) up to ``max_attempts``; other 4xx are given up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from syncclass.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from syncclass.config import WebhookConfig
from syncclass.events import Event, EventBus
from syncclass.protocol import dumps_strict
from syncclass.redact import redact_text, redact_url

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass
class _Delivery:
    id: str
    event: Event
    body: bytes


class WebhookSender:
    """Delivers events from ``bus`` to one webhook: ``start()`` then ``aclose()``."""

    def __init__(self, config: WebhookConfig, bus: EventBus,
                 backoff_initial_s: float = BACKOFF_INITIAL_S) -> None:
        self.config = config
        self.bus = bus
        self.shown_url = redact_url(config.url)
        """The URL as shown in logs, stats and metrics (no password, no key)."""
        self._secret = config.secret.encode("utf-8")
        self._all = "*" in config.events
        self._names = frozenset(config.events)
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.backoff_initial_s = backoff_initial_s
        self.delivered = 0
        self.failed = 0
        """Events given up after their attempts (or refused with a 4xx)."""
        self.dropped = 0
        """Events dropped because the queue was full."""
        self.attempts = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is not None:
            return
        self.bus.subscribe(self._on_event)
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name(f"webhook:{self.shown_url}")

    async def aclose(self, drain_s: float = 2.0) -> None:
        """Stop taking events; give queued ones up to ``drain_s`` seconds, then stop."""
        with contextlib.suppress(ValueError):
            self.bus.unsubscribe(self._on_event)
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not self._queue.empty():
            logger.warning("webhook %s: %d event(s) not delivered at shutdown", self.shown_url,
                           self._queue.qsize())

    # -- intake (runs inside EventBus.emit: must not block) ------------------------------------
    def _on_event(self, event: Event) -> None:
        if not (self._all or event.name in self._names):
            return
        delivery_id = uuid.uuid4().hex
        payload = {"id": delivery_id, "event": event.name, "ts_ms": event.ts_ms,
                   "lesson_id": event.lesson_id, "classroom_id": event.classroom_id,
                   "data": event.data}
        body = dumps_strict(payload, ensure_ascii=False, default=_jsonable).encode("utf-8")
        if self._queue.full():
            old = self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
            logger.warning("webhook %s: queue full, dropped %s event %s (%d dropped)",
                           self.shown_url, old.event.name, old.id, self.dropped)
        self._queue.put_nowait(_Delivery(delivery_id, event, body))

    # -- sending ------------------------------------------------------------------------------
    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while True:
                delivery = await self._queue.get()
                try:
                    await self._deliver(session, delivery)
                finally:
                    self._queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, d: _Delivery) -> None:
        backoff = self.backoff_initial_s
        for attempt in range(1, self.config.max_attempts + 1):
            self.attempts += 1
            ts = int(time.time())
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "syncclass-webhook/1",
                "X-Syncclass-Event": d.event.name,
                "X-Syncclass-Delivery": d.id,
                TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: sign_webhook(self._secret, d.body, ts),
            }
            retry = True
            try:
                async with session.post(self.config.url, data=d.body, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        logger.debug("webhook %s: delivered %s %s", self.shown_url,
                                     d.event.name, d.id)
                        return
                    retry = resp.status == 429 or resp.status >= 500
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = redact_text(f"{type(exc).__name__}: {exc}")  # may quote the URL
            if not retry or attempt == self.config.max_attempts:
                self.failed += 1
                logger.error("webhook %s: giving up on %s event %s after %d attempt(s): %s",
                             self.shown_url, d.event.name, d.id, attempt, problem)
                return
            delay = min(backoff, BACKOFF_MAX_S) * random.uniform(0.8, 1.2)
            logger.warning("webhook %s: %s event %s attempt %d failed (%s); retrying in %.1f s",
                           self.shown_url, d.event.name, d.id, attempt, problem, delay)
            await asyncio.sleep(delay)
            backoff *= 2

    def stats(self) -> dict[str, Any]:
        return {"url": self.shown_url, "delivered": self.delivered, "failed": self.failed,
                "dropped": self.dropped, "pending": self.pending, "attempts": self.attempts}


def _jsonable(value: Any) -> Any:
    """Event data may hold pydantic models (e.g. ``LessonInfo``) and dataclasses."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
