"""Guards of the mixer's HTTP surface: who may read what, and what a bad client may cost.

- **Readers** (:func:`require_reader`, :func:`require_ops`): every read API answers only to
  a dashboard session (the ``syncclass_ops`` cookie), the ops API token
  (``Authorization: Bearer <ops.api_token>``), or a classroom/observer credential, which
  reads only the lessons of its own pairings. Failed credentials count against the
  client address like failed hellos (``mixer.auth_failures_per_min``).
- **Report links**: a report page opened as ``/reports/<id>/?token=...`` swaps the token
  for a signed, HttpOnly cookie scoped to that report (:meth:`Guard.issue_grant`) and
  redirects to the URL without it, so the credential leaves the address bar, history and
  ``Referer`` at once.
- **Access log** (:class:`RedactingAccessLogger`): paths are logged without their query
  string and without ``Referer``, so no credential ever reaches the log.
- **Slow clients** (:class:`GuardedAppRunner`): a request's line and headers must arrive
  within ``mixer.header_timeout_s`` (slow-loris clients get 408 and are disconnected), and
  at most ``mixer.max_connections_per_client`` connections are open per client address
  (more get 503). aiohttp has neither; the handler below adds both on top of aiohttp's
  ``RequestHandler`` (3.10 ≤ aiohttp < 4, pyproject's range; it reads the handler's
  ``_request_count``, ``_current_request``, ``_messages`` and ``_upgraded``).
- **WebSockets**: :func:`hello_deadline` closes a signaling socket that does not
  authenticate in time (code 4408, error ``auth_timeout``); :func:`bounded_send` gives up a
  send to a socket that does not read after ``mixer.send_timeout_s`` and drops it, so one
  stuck client never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from syncclass.httperrors import json_error

if TYPE_CHECKING:
    from .observer import ObserverHub
    from .server import Mixer

logger = logging.getLogger(__name__)

REPORT_COOKIE = "syncclass_report"
WS_CLOSE_AUTH_TIMEOUT = 4408
"""WebSocket close code for "no hello in time" (private range 4000-4999; 408 as in HTTP)."""
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 32\r\n\r\n"
                     b"request headers took too long.\r\n")
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 45\r\n\r\n"
                  b"too many connections from this client address\n")


@dataclass(frozen=True)
class Reader:
    """Who asks, and which pairings' lessons they may read (``None``: every pairing)."""

    who: str
    """``ops:<user>``, ``ops:api_token``, ``classroom:<id>`` or ``observer:<id>``."""
    pairings: frozenset[str] | None

    @property
    def is_ops(self) -> bool:
        return self.pairings is None

    def may_read(self, pairing_id: str) -> bool:
        return self.pairings is None or pairing_id in self.pairings


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


class Guard:
    """Access policy, report grants and connection accounting of one mixer app."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer
        self.limits = mixer.config.mixer
        ops = mixer.config.ops
        # A stable key when the session secret is configured (grants survive restarts).
        self._grant_key = (hashlib.sha256(b"syncclass report grant\0" +
                                          ops.session_secret.encode()).digest()
                           if ops.session_secret else os.urandom(32))
        self._api_token = ops.api_token.encode() if ops.api_token else None
        self._per_address: dict[str, int] = {}
        self.stats = GuardStats()
        self.observers: ObserverHub | None = None
        """Observer credentials (set by :func:`setup_guard` when the hub exists)."""

    # -- readers --------------------------------------------------------------------------
    def reader_for_token(self, token: str) -> Reader | None:
        """The reader a bearer credential stands for; ``None`` if it is none we know."""
        if self._api_token is not None and hmac.compare_digest(self._api_token,
                                                                token.encode()):
            return Reader("ops:api_token", None)
        if self.observers is not None:
            observer = self.observers.observer_for_token(token)
            if observer is not None:
                return Reader(f"observer:{observer.id}", frozenset(observer.pairings))
        room = self.mixer.classroom_for_token(token)  # static or signed
        if room is None:
            return None
        pairings = frozenset(p.id for p in self.mixer.config.pairings
                             if room.id == p.main or room.id in p.receiving)
        return Reader(f"classroom:{room.id}", pairings)

    def reader_of(self, request: web.Request) -> Reader | None:
        """The reader of a request (session cookie or bearer token), ``None`` without
        credential. A wrong credential raises 401 (429 once the address is over
        ``mixer.auth_failures_per_min``)."""
        from .dashboard import OPS_KEY  # dashboard imports server, which imports us

        if OPS_KEY in request.app:
            user = request.app[OPS_KEY].user_of(request)
            if user is not None:
                return Reader(f"ops:{user}", None)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return None
        key, now = request.remote or "unknown", time.monotonic()
        limiter = self.mixer.auth_failures
        if limiter.blocked(key, now):
            wait = limiter.retry_after_s(key, now)
            raise json_error(web.HTTPTooManyRequests, "rate_limited",
                             f"too many failed attempts; retry in {wait:.0f} s")
        reader = (self.reader_for_token(auth[len("Bearer "):])
                  if auth.startswith("Bearer ") else None)
        if reader is None:
            limiter.allow(key, now)
            logger.warning("refused a credential on %s from %s", request.path, request.remote)
            raise json_error(web.HTTPUnauthorized, "auth_failed", "unknown credential")
        return reader

    # -- report grants --------------------------------------------------------------------
    def _grant_mac(self, lesson_id: str, expires: int) -> str:
        msg = f"report\0{lesson_id}\0{expires}".encode()
        return hmac.new(self._grant_key, msg, hashlib.sha256).hexdigest()

    def issue_grant(self, lesson_id: str, now_s: float, lifetime_s: float) -> str:
        """A cookie value letting its holder read ``lesson_id``'s report until
        ``now_s + lifetime_s`` (epoch seconds)."""
        expires = int(now_s + lifetime_s)
        return f"{expires}.{self._grant_mac(lesson_id, expires)}"

    def grant_valid(self, value: str | None, lesson_id: str, now_s: float) -> bool:
        if not value or len(value) > 128 or "." not in value:
            return False
        expires, mac = value.split(".", 1)
        if not expires.isdigit() or int(expires) <= now_s:
            return False
        return hmac.compare_digest(self._grant_mac(lesson_id, int(expires)), mac)

    # -- connections ----------------------------------------------------------------------
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


GUARD_KEY = web.AppKey("guard", Guard)


def setup_guard(app: web.Application, mixer: Mixer) -> Guard:
    """Attach the guard to the mixer's app (after the observer hub, whose tokens it reads)."""
    guard = Guard(mixer)
    from .observer import OBSERVERS_KEY

    if OBSERVERS_KEY in app:
        guard.observers = app[OBSERVERS_KEY]
    app[GUARD_KEY] = guard
    return guard


def require_reader(request: web.Request) -> Reader:
    """The request's reader; 401 without a credential."""
    reader = request.app[GUARD_KEY].reader_of(request)
    if reader is None:
        raise json_error(web.HTTPUnauthorized, "auth_required",
                         "log in to the dashboard or send Authorization: Bearer <credential>")
    return reader


def require_ops(request: web.Request) -> Reader:
    """The request's reader if it is ops (dashboard session or ops API token); else 401/403."""
    reader = require_reader(request)
    if not reader.is_ops:
        raise json_error(web.HTTPForbidden, "not_allowed", "for ops users only")
    return reader


# -- access log ---------------------------------------------------------------------------------
class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log line without query string or ``Referer`` (they may carry
    credentials): ``<remote> "<method> <path> HTTP/x.y" <status> <bytes> <seconds>``."""

    def log(self, request: Any, response: Any, time: float) -> None:
        version = request.version
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3f "%s"', request.remote,
                         request.method, request.path, version.major, version.minor,
                         response.status, response.body_length, time,
                         request.headers.get("User-Agent", "-"))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


# -- slow clients -------------------------------------------------------------------------------
class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a header deadline and a per-address cap."""

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
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
    def __init__(self, base: web.Server, guard: Guard) -> None:
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
        return _GuardedServer(base, self.app[GUARD_KEY])


# -- WebSockets ---------------------------------------------------------------------------------
async def bounded_send(ws: web.WebSocketResponse, text: str, timeout_s: float,
                       transport: asyncio.Transport | None, who: str,
                       stats: GuardStats | None = None) -> bool:
    """Send ``text``; a peer that has not taken it within ``timeout_s`` (it does not read:
    every buffer is full) is dropped (its transport aborted). True if sent."""
    if ws.closed or (transport is not None and transport.is_closing()):
        return False
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the send completes, and the cancelled task runs on.
        async with asyncio.timeout(timeout_s):
            await ws.send_str(text)
        return True
    except TimeoutError:
        logger.warning("%s: does not read; dropped it after a send waited %.1f s",
                       who, timeout_s)
        if stats is not None:
            stats.send_timeouts += 1
        if transport is not None:
            transport.abort()
        return False
    except (ConnectionError, RuntimeError):
        return False


async def hello_deadline(ws: web.WebSocketResponse, authenticated: Callable[[], bool],
                         timeout_s: float,
                         on_timeout: Callable[[], Awaitable[None]]) -> None:
    """After ``timeout_s``, close ``ws`` with :data:`WS_CLOSE_AUTH_TIMEOUT` unless
    ``authenticated()``; ``on_timeout`` runs first (it sends the error message). The caller
    owns the task and cancels it when the socket ends."""
    await asyncio.sleep(timeout_s)
    if ws.closed or authenticated():
        return
    await on_timeout()
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        await asyncio.wait_for(ws.close(code=WS_CLOSE_AUTH_TIMEOUT,
                                        message=b"auth_timeout"), 5.0)
