"""Guards of the mixer's HTTP surface: who may read what, and what a bad client may cost.

Imports nothing from the rest of ``mixer``: the mixer's classroom credentials, the observer
credentials and the dashboard's session check are passed to :func:`setup_guard`.

- **Readers** (:func:`require_reader`, :func:`require_ops`): every read API answers only to
  a dashboard session (the ``syncclass_ops`` cookie), the ops API token
  (``Authorization: Bearer <ops.api_token>``), or a classroom/observer credential, which
  reads only the lessons of its own pairings. Failed credentials count against the
  client address like failed hellos (``mixer.auth_failures_per_min``).
  See :mod:`mixer.guard.credentials` (also report grants and the access log).
- **Slow clients** (:class:`GuardedAppRunner`, :mod:`mixer.guard.limits`): a header
  deadline and a cap on connections per client address.
- **WebSockets** (:mod:`mixer.guard.websocket`): :func:`hello_deadline` and
  :func:`bounded_send`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from syncclass.config import ObserverConfig
from syncclass.httperrors import json_error

from .credentials import (
    REPORT_COOKIE,
    ClassroomCredentials,
    CredentialIndex,
    Reader,
    RedactingAccessLogger,
    ReportGrants,
)
from .limits import LIMITS_KEY, ConnectionLimits, GuardedAppRunner, GuardStats
from .websocket import WS_CLOSE_AUTH_TIMEOUT, bounded_send, hello_deadline

__all__ = [
    "GUARD_KEY",
    "REPORT_COOKIE",
    "WS_CLOSE_AUTH_TIMEOUT",
    "ClassroomCredentials",
    "ConnectionLimits",
    "CredentialIndex",
    "Guard",
    "GuardStats",
    "GuardedAppRunner",
    "Reader",
    "RedactingAccessLogger",
    "ReportGrants",
    "bounded_send",
    "hello_deadline",
    "issue_report_grant",
    "reader_of",
    "report_grant_valid",
    "require_ops",
    "require_reader",
    "setup_guard",
]

logger = logging.getLogger(__name__)


class Guard:
    """Access policy, report grants and connection accounting of one mixer app."""

    def __init__(self, mixer: ClassroomCredentials, *,
                 observer_for_token: Callable[[str], ObserverConfig | None] | None = None,
                 session_user: Callable[[web.Request], str | None] | None = None) -> None:
        """``observer_for_token``: the observer a credential belongs to; ``session_user``:
        the dashboard user logged in by a request's session cookie."""
        self.mixer = mixer
        ops = mixer.config.ops
        self.credentials = CredentialIndex(mixer, ops.api_token, observer_for_token)
        self.grants = ReportGrants(ops.session_secret)
        self.connections = ConnectionLimits(mixer.config.mixer)
        self.session_user = session_user

    @property
    def stats(self) -> GuardStats:
        """Counters since start (served in ``/api/stats`` to ops readers)."""
        return self.connections.stats

    def connections_of(self, address: str) -> int:
        """Connections open from ``address``."""
        return self.connections.connections_of(address)

    # -- readers --------------------------------------------------------------------------
    def reader_for_token(self, token: str) -> Reader | None:
        """The reader a bearer credential stands for; ``None`` if it is none we know."""
        return self.credentials.reader_for_token(token)

    def reader_of(self, request: web.Request) -> Reader | None:
        """The reader of a request (session cookie or bearer token), ``None`` without
        credential. A wrong credential raises 401 (429 once the address is over
        ``mixer.auth_failures_per_min``)."""
        if self.session_user is not None:
            user = self.session_user(request)
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
    def issue_grant(self, lesson_id: str, now_s: float, lifetime_s: float) -> str:
        """A cookie value letting its holder read ``lesson_id``'s report until
        ``now_s + lifetime_s`` (epoch seconds)."""
        return self.grants.issue_grant(lesson_id, now_s, lifetime_s)

    def grant_valid(self, value: str | None, lesson_id: str, now_s: float) -> bool:
        return self.grants.grant_valid(value, lesson_id, now_s)


GUARD_KEY = web.AppKey("guard", Guard)


def setup_guard(app: web.Application, mixer: ClassroomCredentials, *,
                observer_for_token: Callable[[str], ObserverConfig | None] | None = None,
                session_user: Callable[[web.Request], str | None] | None = None) -> Guard:
    """Attach the guard to the mixer's app: who may read what (:func:`require_reader`),
    and the connection limits :class:`GuardedAppRunner` applies."""
    guard = Guard(mixer, observer_for_token=observer_for_token, session_user=session_user)
    app[GUARD_KEY] = guard
    app[LIMITS_KEY] = guard.connections
    return guard


def reader_of(request: web.Request) -> Reader | None:
    """The request's reader, ``None`` without credential (see :meth:`Guard.reader_of`)."""
    return request.app[GUARD_KEY].reader_of(request)


def require_reader(request: web.Request) -> Reader:
    """The request's reader; 401 without a credential."""
    reader = reader_of(request)
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


def issue_report_grant(request: web.Request, lesson_id: str, now_s: float,
                       lifetime_s: float) -> str:
    """A report grant cookie value for ``lesson_id`` (see :class:`ReportGrants`)."""
    return request.app[GUARD_KEY].issue_grant(lesson_id, now_s, lifetime_s)


def report_grant_valid(request: web.Request, value: str | None, lesson_id: str,
                       now_s: float) -> bool:
    """Whether the cookie ``value`` grants ``lesson_id``'s report at ``now_s``."""
    return request.app[GUARD_KEY].grant_valid(value, lesson_id, now_s)
