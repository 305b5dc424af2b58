"""Signed, expiring classroom credentials (pure: no I/O).

A county keeps one or more signing keys in its config (``mixer.token_keys``: a list of
``{id, secret}``). The first key signs new tokens; every listed key verifies, so keys are
rotated by putting a new key first, re-issuing tokens, and removing the old key once every
classroom has its new token.

A token is ``v1.<classroom_id>.<expires>.<key_id>.<mac>``:

- ``expires``: epoch seconds after which the token is refused;
- ``mac``: unpadded base64url of HMAC-SHA256(secret, ``v1.<classroom_id>.<expires>.<key_id>``).

The classroom id is inside the signed text, so a token of one classroom can never be used
to pose as another; a token is only as secret as the key that signed it. Tokens are issued
by ``syncclass token issue --classroom ID --days N``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import AuthError

TOKEN_VERSION = "v1"
_ID = r"[a-z0-9][a-z0-9_-]{0,62}"
_TOKEN_RE = re.compile(rf"^v1\.({_ID})\.([0-9]{{1,12}})\.({_ID})\.([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class SigningKey:
    """One county signing key."""

    key_id: str
    """Short public name of the key (in every token it signed)."""
    secret: bytes
    """The HMAC key (at least 32 bytes of entropy; never logged)."""

    def __repr__(self) -> str:  # never show the secret in logs or tracebacks
        return f"SigningKey(key_id={self.key_id!r}, secret=<hidden>)"


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    classroom_id: str
    expires_s: int
    """Epoch seconds when the token stops being accepted."""
    key_id: str


def looks_signed(token: str) -> bool:
    """Whether ``token`` has the shape of a signed token (it may still be invalid)."""
    return token.startswith(TOKEN_VERSION + ".")


def _mac(key: SigningKey, text: str) -> str:
    digest = hmac.new(key.secret, text.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_token(key: SigningKey, classroom_id: str, expires_s: int) -> str:
    """A token for ``classroom_id`` valid until ``expires_s`` (epoch seconds)."""
    if not re.fullmatch(_ID, classroom_id):
        raise ValueError(f"classroom id {classroom_id!r} is not a valid identifier")
    if not re.fullmatch(_ID, key.key_id):
        raise ValueError(f"key id {key.key_id!r} is not a valid identifier")
    if not 0 < expires_s < 10**12:
        raise ValueError(f"expiry {expires_s} is not an epoch time in seconds")
    text = f"{TOKEN_VERSION}.{classroom_id}.{expires_s}.{key.key_id}"
    return f"{text}.{_mac(key, text)}"


def verify_token(token: str, keys: Sequence[SigningKey], now_s: float) -> TokenClaims:
    """The claims of a valid token; raises :class:`AuthError` ``auth_failed`` otherwise.

    The error message says what was wrong (malformed, unknown key, bad signature,
    expired) but never repeats the token.
    """
    m = _TOKEN_RE.fullmatch(token)
    if m is None:
        raise AuthError("auth_failed", "malformed token")
    classroom_id, expires, key_id, mac = m.groups()
    key = next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        raise AuthError("auth_failed", f"token signed by an unknown key {key_id!r}")
    text = f"{TOKEN_VERSION}.{classroom_id}.{expires}.{key_id}"
    if not hmac.compare_digest(_mac(key, text).encode(), mac.encode()):
        raise AuthError("auth_failed", "token signature does not match")
    if int(expires) <= now_s:
        raise AuthError("auth_failed", "token expired")
    return TokenClaims(classroom_id, int(expires), key_id)
