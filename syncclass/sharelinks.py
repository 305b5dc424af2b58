"""Signed, expiring links to one lesson (名师课堂 shared with the public), and the short-lived
grants a watch page swaps a credential for. Pure: no I/O, the clock is an argument.

A share link carries ``share=<expires>.<mac>``: ``mac`` is HMAC-SHA256 (base64url) over
``scope``, lesson id and expiry with the media server's ``share_secret``, so it names one
lesson, for one use (``live`` or ``replay``), until one time, and cannot be altered.

A grant is the value of the cookie a watch page sets once a credential was checked:
``<expires>~<who>~<mac>`` for one lesson; ``who`` says whose view it is (for the log of
views of minors' video).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

from .errors import AuthError

ShareScope = Literal["live", "replay"]

_WHO_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,80}$")
_LESSON_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _mac(secret: bytes, *parts: str) -> str:
    digest = hmac.new(secret, "\0".join(parts).encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_lesson(lesson_id: str) -> None:
    if not _LESSON_RE.match(lesson_id) or ".." in lesson_id:
        raise ValueError(f"invalid lesson id {lesson_id[:80]!r}")


def sign_share(secret: bytes, scope: ShareScope, lesson_id: str, expires_s: int) -> str:
    """The ``share`` parameter letting anyone watch ``lesson_id`` (``scope``) until
    ``expires_s`` (epoch seconds)."""
    if len(secret) < 32:
        raise ValueError("share secret must have at least 32 bytes")
    _check_lesson(lesson_id)
    if not 0 < expires_s < 10**12:
        raise ValueError(f"expiry {expires_s} is not an epoch time in seconds")
    return f"{expires_s}.{_mac(secret, 'share', scope, lesson_id, str(expires_s))}"


def verify_share(secret: bytes, scope: ShareScope, lesson_id: str, value: str,
                 now_s: float) -> int:
    """The expiry (epoch s) of a valid share parameter; :class:`AuthError` ``share_invalid``
    or ``share_expired`` otherwise (the message never repeats the value)."""
    expires, _, mac = value.partition(".")
    if not expires.isdigit() or not mac or len(value) > 128:
        raise AuthError("share_invalid", "malformed share link")
    want = _mac(secret, "share", scope, lesson_id, expires)
    if not hmac.compare_digest(want.encode(), mac.encode()):
        raise AuthError("share_invalid", "share link signature does not match")
    if int(expires) <= now_s:
        raise AuthError("share_expired", "share link expired")
    return int(expires)


@dataclass(frozen=True)
class Grant:
    """What a valid grant cookie says."""

    who: str
    expires_s: int


class Grants:
    """Issues and checks per-lesson grant cookie values (HMAC with a key derived from a
    secret, so grants survive a restart when the secret is configured)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("grant secret must have at least 16 bytes")
        self._key = hashlib.sha256(b"syncclass watch grant\0" + secret).digest()

    def issue(self, lesson_id: str, who: str, expires_s: int) -> str:
        if not _WHO_RE.match(who):
            raise ValueError(f"invalid viewer name {who[:80]!r}")
        return f"{expires_s}~{who}~{_mac(self._key, lesson_id, who, str(expires_s))}"

    def verify(self, value: str | None, lesson_id: str, now_s: float) -> Grant | None:
        """The grant of a valid, unexpired value for ``lesson_id``; else ``None``."""
        if not value or len(value) > 256:
            return None
        parts = value.split("~")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, who, mac = parts
        if not hmac.compare_digest(_mac(self._key, lesson_id, who, expires).encode(),
                                   mac.encode()):
            return None
        if int(expires) <= now_s:
            return None
        return Grant(who, int(expires))
