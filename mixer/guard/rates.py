"""What one client may cost the mixer's signaling: rate limits per classroom/observer and
the fate of sockets that never authenticate.

- ``lesson_action``: lesson starts and ends per main classroom
  (``mixer.lesson_actions_per_min``): each start builds a media pipeline.
- ``ping``: pings answered per classroom or observer (``mixer.pings_per_min``); the rest
  are dropped unanswered.
- ``comment``: comments per observer (``mixer.comments_per_min``).
- Before ``hello``: each refused message gets its error reply; after
  ``mixer.max_errors_before_hello`` of them the socket is closed (code
  :data:`WS_CLOSE_TOO_MANY_ERRORS`).
- Refusals are logged through a :class:`~syncclass.ratelimit.LogLimiter` (10 lines, then
  one per second, each saying how many were left out): a flood of bad messages never
  becomes a flood of log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Literal

from aiohttp import web

from syncclass.config import MixerConfig
from syncclass.errors import AuthError
from syncclass.ratelimit import LogLimiter, RateLimiter

logger = logging.getLogger(__name__)

LimitName = Literal["lesson_action", "ping", "comment"]
WS_CLOSE_TOO_MANY_ERRORS = 4400
"""WebSocket close code for "too many refused messages before hello" (private range)."""
_WHAT = {"lesson_action": "lesson starts/ends", "ping": "pings", "comment": "comments"}


class SignalingLimits:
    """The per-key limits of one mixer (keys: classroom ids, ``observer:<id>``)."""

    def __init__(self, cfg: MixerConfig) -> None:
        per_min = {"lesson_action": cfg.lesson_actions_per_min, "ping": cfg.pings_per_min,
                   "comment": cfg.comments_per_min}
        self.limiters: dict[str, RateLimiter] = {
            name: RateLimiter(n / 60.0, n) for name, n in per_min.items()}
        self.max_errors_before_hello = cfg.max_errors_before_hello
        self._refused: weakref.WeakKeyDictionary[web.WebSocketResponse, int] = (
            weakref.WeakKeyDictionary())
        self._log = LogLimiter(rate_per_s=1.0, burst=10)
        self.closed_unauthenticated = 0
        """Sockets closed for too many refused messages before ``hello``."""

    def allow(self, name: LimitName, key: str) -> bool:
        """Count one event of ``key``; whether it is within the limit."""
        return self.limiters[name].allow(key, time.monotonic())

    def check(self, name: LimitName, key: str) -> None:
        """Count one event of ``key``; :class:`AuthError` ``rate_limited`` beyond the
        limit."""
        now = time.monotonic()
        limiter = self.limiters[name]
        if not limiter.allow(key, now):
            wait = limiter.retry_after_s(key, now)
            raise AuthError("rate_limited", f"too many {_WHAT[name]}; retry in {wait:.1f} s")

    def log_refusal(self, ref: str | None, remote: str | None, message: str) -> None:
        """Log a refused message (rate-limited)."""
        left_out = self._log.allow(time.monotonic())
        if left_out is None:
            return
        more = f" ({left_out} similar lines left out)" if left_out else ""
        logger.warning("refused %s from %s: %s%s", ref, remote, message, more)

    def refused_before_hello(self, ws: web.WebSocketResponse) -> int:
        """Count one refused message of a socket without ``hello``; the count so far."""
        n = self._refused.get(ws, 0) + 1
        self._refused[ws] = n
        return n


async def refuse_unauthenticated(ws: web.WebSocketResponse, limits: SignalingLimits,
                                 remote: str | None) -> bool:
    """After a refused message of a socket that has not authenticated: close it once it
    reached ``mixer.max_errors_before_hello`` of them. True if closed."""
    n = limits.refused_before_hello(ws)
    if n < limits.max_errors_before_hello:
        return False
    limits.closed_unauthenticated += 1
    limits.log_refusal("socket", remote, f"closed after {n} messages before hello")
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        async with asyncio.timeout(5.0):  # a socket that does not read
            await ws.close(code=WS_CLOSE_TOO_MANY_ERRORS, message=b"too many errors")
    return True
