"""Credentials of ops users and webhook signatures (pure: no I/O, time passed in).

- Passwords: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` (stdlib :func:`hashlib.scrypt`,
  16-byte random salt per user), compared in constant time. ``syncclass hash-password``
  prints such a string for the config's ``ops.users``.
- Session cookies: ``<user>.<expires epoch s>.<hex HMAC-SHA256>`` signed with the mixer's
  session secret; tampering or expiry makes :meth:`SessionSigner.verify` return ``None``.
- Login rate limiting: :class:`LoginRateLimiter`, a sliding window per key (client address,
  user name).
- Webhooks: :func:`sign_webhook` / :func:`verify_webhook` — HMAC-SHA256 over
  ``"<timestamp>." + body``, sent as ``X-Syncclass-Signature: sha256=<hex>`` with
  ``X-Syncclass-Timestamp: <epoch s>``; including the timestamp stops replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections import deque
from dataclasses import dataclass

SCRYPT_LOG2_N = 14
"""Cost: n = 2**14, r = 8 → 16 MiB and ~50 ms per check; makes offline guessing slow."""
SCRYPT_R = 8
SCRYPT_P = 1
_HASH_RE = re.compile(
    r"^scrypt\$(?P<log2n>\d{1,2})\$(?P<r>\d{1,2})\$(?P<p>\d{1,2})\$"
    r"(?P<salt>[A-Za-z0-9+/=]{16,})\$(?P<hash>[A-Za-z0-9+/=]{40,})$"
)
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SIGNATURE_HEADER = "X-Syncclass-Signature"
TIMESTAMP_HEADER = "X-Syncclass-Timestamp"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    n = 1 << log2n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + (1 << 20), dklen=32)


def hash_password(password: str, *, log2n: int = SCRYPT_LOG2_N, salt: bytes | None = None) -> str:
    """The storable hash of ``password`` (a fresh random salt unless one is given)."""
    if not password:
        raise ValueError("password must not be empty")
    salt = os.urandom(16) if salt is None else salt
    digest = _scrypt(password, salt, log2n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${log2n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password_hash_format(encoded: str) -> str:
    """``encoded`` if it is a hash made by :func:`hash_password`; ValueError otherwise."""
    m = _HASH_RE.match(encoded)
    if m is None:
        raise ValueError("not a password hash of the form scrypt$<log2n>$<r>$<p>$<salt>$<hash> "
                         "(make one with `syncclass hash-password`)")
    if not 10 <= int(m["log2n"]) <= 20:
        raise ValueError("password hash cost log2(n) must be between 10 and 20")
    return encoded


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; constant-time comparison."""
    m = _HASH_RE.match(encoded)
    if m is None:
        return False
    salt = base64.b64decode(m["salt"])
    expected = base64.b64decode(m["hash"])
    got = _scrypt(password, salt, int(m["log2n"]), int(m["r"]), int(m["p"]))
    return hmac.compare_digest(got, expected)


class SessionSigner:
    """Issues and checks signed session cookie values."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("session secret must be at least 16 bytes")
        self._secret = secret

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode("utf-8"), hashlib.sha256).hexdigest()

    def issue(self, user: str, now_s: float, lifetime_s: float) -> str:
        """A cookie value for ``user`` valid until ``now_s + lifetime_s`` (epoch seconds)."""
        if not _USER_RE.match(user):
            raise ValueError(f"invalid user name {user!r}")
        payload = f"{user}.{int(now_s + lifetime_s)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, value: str | None, now_s: float) -> str | None:
        """The user of a valid, unexpired cookie value, else ``None``."""
        if not value or len(value) > 256:
            return None
        parts = value.split(".")
        if len(parts) != 3:
            return None
        user, expires, sig = parts
        if not hmac.compare_digest(self._sign(f"{user}.{expires}"), sig):
            return None
        if not expires.isdigit() or int(expires) <= now_s:
            return None
        return user


@dataclass
class LoginRateLimiter:
    """At most ``max_failures`` failed logins per key within ``window_s`` seconds."""

    max_failures: int = 5
    window_s: float = 60.0
    max_keys: int = 10_000
    """Keys tracked at most (oldest forgotten first), so a flood cannot exhaust memory."""

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now_s: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now_s - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def blocked_for(self, key: str, now_s: float) -> float:
        """Seconds until ``key`` may try again (0: it may try now)."""
        q = self._recent(key, now_s)
        if len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window_s - now_s)

    def failed(self, key: str, now_s: float) -> None:
        if key not in self._failures and len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(key, deque()).append(now_s)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


def sign_webhook(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """The ``X-Syncclass-Signature`` value for ``body`` sent at ``timestamp_s``."""
    mac = hmac.new(secret, str(timestamp_s).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(secret: bytes, body: bytes, timestamp_header: str | None,
                   signature_header: str | None, now_s: float, tolerance_s: float = 300.0) -> bool:
    """What a webhook receiver checks: a valid signature and a timestamp within tolerance."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    ts = int(timestamp_header)
    if abs(now_s - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, body, ts), signature_header)
