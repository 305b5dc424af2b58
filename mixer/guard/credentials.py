"""Credentials of the mixer's HTTP surface: who a credential stands for, report grants,
and an access log that never shows one.

- :class:`CredentialIndex` maps a bearer credential (the ops API token, an observer's or
  a classroom's credential) to a :class:`Reader`: ops read everything, a classroom or
  observer only the lessons of its own pairings.
- :class:`ReportGrants`: a report page opened as ``/reports/<id>/?token=...`` swaps the
  token for a signed, HttpOnly cookie scoped to that report and redirects to the URL
  without it, so the credential leaves the address bar, history and ``Referer`` at once.
- :class:`RedactingAccessLogger`: paths are logged without their query string and without
  ``Referer``, so no credential ever reaches the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp.abc import AbstractAccessLogger

from syncclass.config import ClassroomConfig, CountyConfig, ObserverConfig
from syncclass.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

REPORT_COOKIE = "syncclass_report"


class ClassroomCredentials(Protocol):
    """What the guard needs of the mixer (:class:`mixer.core.Mixer` is one): the config,
    the classroom credentials and the failed-credential counter per address."""

    config: CountyConfig
    auth_failures: RateLimiter

    def classroom_for_token(self, token: str) -> ClassroomConfig | None: ...


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


class CredentialIndex:
    """Which reader a bearer credential stands for."""

    def __init__(self, classrooms: ClassroomCredentials, api_token: str | None,
                 observer_for_token: Callable[[str], ObserverConfig | None] | None = None
                 ) -> None:
        self.classrooms = classrooms
        self._api_token = api_token.encode() if api_token else None
        self.observer_for_token = observer_for_token

    def reader_for_token(self, token: str) -> Reader | None:
        """The reader a bearer credential stands for; ``None`` if it is none we know."""
        if self._api_token is not None and hmac.compare_digest(self._api_token,
                                                                token.encode()):
            return Reader("ops:api_token", None)
        if self.observer_for_token is not None:
            observer = self.observer_for_token(token)
            if observer is not None:
                return Reader(f"observer:{observer.id}", frozenset(observer.pairings))
        room = self.classrooms.classroom_for_token(token)  # static or signed
        if room is None:
            return None
        pairings = frozenset(p.id for p in self.classrooms.config.pairings
                             if room.id == p.main or room.id in p.receiving)
        return Reader(f"classroom:{room.id}", pairings)


class ReportGrants:
    """Signed cookie values that each let a browser read one lesson's report for a while."""

    def __init__(self, session_secret: str | None) -> None:
        # A stable key when the session secret is configured (grants survive restarts).
        self._grant_key = (hashlib.sha256(b"syncclass report grant\0" +
                                          session_secret.encode()).digest()
                           if session_secret else os.urandom(32))

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
