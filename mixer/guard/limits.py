"""Connection limits of the mixer's HTTP server: what a slow or greedy client may cost.

:class:`GuardedAppRunner`: a request's line and headers must arrive within
``mixer.header_timeout_s`` (slow-loris clients get 408 and are disconnected), and at most
``mixer.max_connections_per_client`` connections are open per client address (more get
503). aiohttp has neither; the handler below adds both on top of aiohttp's
``RequestHandler`` (3.10 ≤ aiohttp < 4, pyproject's range; it reads the handler's
``_request_count``, ``_current_request``, ``_messages`` and ``_upgraded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from syncclass.config import MixerConfig

logger = logging.getLogger(__name__)

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 32\r\n\r\n"
                     b"request headers took too long.\r\n")
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 45\r\n\r\n"
                  b"too many connections from this client address\n")


@dataclass
class GuardStats:
    """Counters since start (served in ``/api/stats`` to ops readers)."""

    header_timeouts: int = 0
    """Connections closed because their request headers were too slow (slow-loris)."""
    refused_connections: int = 0
    """Connections refused over ``mixer.max_connections_per_client``."""
    hello_timeouts: int = 0
    """Signaling sockets closed for not sending ``hello`` in time."""
    send_timeouts: int = 0
    """WebSockets dropped because they did not read what was sent to them."""
    open_connections: int = 0


class ConnectionLimits:
    """Open connections per client address (``limits.max_connections_per_client``) and
    the guard's counters."""

    def __init__(self, limits: MixerConfig) -> None:
        self.limits = limits
        self._per_address: dict[str, int] = {}
        self.stats = GuardStats()

    def admit(self, address: str) -> bool:
        """Count a new connection of ``address``; False (not counted) over the cap."""
        n = self._per_address.get(address, 0)
        if n >= self.limits.max_connections_per_client:
            self.stats.refused_connections += 1
            return False
        self._per_address[address] = n + 1
        self.stats.open_connections += 1
        return True

    def release(self, address: str) -> None:
        n = self._per_address.get(address, 0) - 1
        if n > 0:
            self._per_address[address] = n
        else:
            self._per_address.pop(address, None)
        self.stats.open_connections -= 1

    def connections_of(self, address: str) -> int:
        return self._per_address.get(address, 0)


LIMITS_KEY = web.AppKey("connection_limits", ConnectionLimits)
"""The app's connection limits (set by :func:`mixer.guard.setup_guard`)."""


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a header deadline and a per-address cap."""

    def __init__(self, manager: web.Server, *, guard: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple | list) and peer else "local"
        if not self._guard.admit(address):
            logger.warning("refused a connection from %s: %d open (mixer."
                           "max_connections_per_client)", address,
                           self._guard.connections_of(address))
            with contextlib.suppress(Exception):
                transport.write(_BUSY_RESPONSE)  # type: ignore[attr-defined]
            self.force_close()
            return
        self._address = address
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self._idle():
            self._arm()  # the first bytes of a keep-alive request
        super().data_received(data)
        if self._deadline is not None and self._request_count != self._deadline_count:
            self._disarm()  # a request's headers are complete

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request being parsed to completion, handled or upgraded."""
        return (self._current_request is None and not self._messages
                and not self._upgraded and not self._force_close)

    def _arm(self) -> None:
        self._deadline_count = self._request_count
        self._deadline = self._loop.call_later(self._guard.limits.header_timeout_s,
                                               self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if (self.transport is None or self._request_count != self._deadline_count
                or not self._idle()):
            return
        self._guard.stats.header_timeouts += 1
        logger.info("closed a connection from %s: no complete request headers within %.1f s",
                    self._address, self._guard.limits.header_timeout_s)
        with contextlib.suppress(Exception):
            self.transport.write(_TIMEOUT_RESPONSE)
        self.force_close()


class _GuardedServer(web.Server):
    def __init__(self, base: web.Server, guard: ConnectionLimits) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop,
                         **base._kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` for the mixer's app whose connections get the header deadline
    and the per-address cap. Idle keep-alive connections close after 75 s (aiohttp's
    RequestHandler default is 3630 s)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", 75.0)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _GuardedServer(base, self.app[LIMITS_KEY])
