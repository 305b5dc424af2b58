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
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

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


class RevokedSessions:
    """Logged-out session cookies, each until it would have expired.

    Kept in memory and, with ``path``, appended to a file (one line per logout: the
    cookie's SHA-256 and its expiry, epoch s) that every process sharing it reads again
    when it grew: the media workers of one node share their mixer's data folder, so a
    logout holds on every worker, and after a worker or the whole mixer restarts with the
    same session secret. With several nodes the cluster passes logouts between nodes
    through Redis (:meth:`add`, ``on_revoke``). Only the digest is stored: the file
    cannot be used to log in. Callers add only cookies that verify, so the file grows by
    one short line per real logout."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.on_revoke: list[Callable[[str, float], None]] = []
        """Called with (digest, expiry epoch s) of each logout made here."""
        self._expiry: dict[str, float] = {}
        self._file_id: tuple[int, int] | None = None
        self._offset = 0

    @staticmethod
    def digest(value: str) -> str:
        return hashlib.sha256(value.encode("utf-8")).hexdigest()

    def revoke(self, value: str, expires_s: float) -> None:
        """Revoke the cookie ``value`` until ``expires_s`` (its own expiry, epoch s). A
        file that cannot be written is logged; the revocation still holds here."""
        digest = self.digest(value)
        self.add(digest, expires_s)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="ascii") as f:
                    f.write(f"{digest} {int(expires_s)}\n")
            except OSError as exc:
                logger.error("logout not written to %s (%s): other workers and a restarted "
                             "mixer accept the session until it expires", self.path, exc)
        for callback in self.on_revoke:
            callback(digest, expires_s)

    def add(self, digest: str, expires_s: float) -> None:
        """A revocation made elsewhere (another node)."""
        if expires_s > self._expiry.get(digest, 0.0):
            self._expiry[digest] = expires_s

    def revoked(self, value: str, now_s: float) -> bool:
        """Whether the cookie ``value`` was logged out (here or by a process sharing the
        file or the cluster)."""
        self._reload(now_s)
        expires = self._expiry.get(self.digest(value))
        return expires is not None and expires > now_s

    def _reload(self, now_s: float) -> None:
        """Read what other processes appended since the last read (all of it when the file
        was replaced), and forget revocations of cookies that have expired anyway."""
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("cannot read logouts from %s: %s", self.path, exc)
            return
        file_id = (st.st_dev, st.st_ino)
        if file_id == self._file_id and st.st_size == self._offset:
            return
        if file_id != self._file_id or st.st_size < self._offset:
            self._file_id, self._offset = file_id, 0
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError as exc:
            logger.warning("cannot read logouts from %s: %s", self.path, exc)
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
        self._offset += len(complete)
        for line in complete.decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and len(parts[0]) == 64 and parts[1].isdigit():
                self.add(parts[0], float(parts[1]))
        for digest, expires in list(self._expiry.items()):
            if expires <= now_s:
                del self._expiry[digest]


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
