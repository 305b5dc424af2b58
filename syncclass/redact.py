"""Secrets out of everything shown: API replies, events, metrics labels and log lines.

Configured URLs (the analytics database, webhooks, object storage, Redis) may carry a
password in their userinfo (``postgresql://user:pw@host/db``) or a key in their query
(``https://hooks.example/x?token=...``). Wherever such a URL is shown it goes through
:func:`redact_url`; free text that may quote one (an exception message) goes through
:func:`redact_text`. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

MASK = "***"
"""What a secret is replaced with."""

SECRET_PARAMS = ("key", "token", "secret", "signature", "sig", "password", "passwd", "pwd",
                 "auth", "credential", "access", "session")
"""A query parameter whose lower-cased name contains one of these is a secret
(``api_key``, ``access_token``, ``X-Amz-Signature``, ``X-Amz-Credential``, ...)."""

_AUTHORITY_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/]*)"
                           r"(?P<rest>.*)$", re.DOTALL)
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMS)


def redact_url(url: str) -> str:
    """``url`` without secrets: the userinfo's password and the values of secret query
    parameters (see :data:`SECRET_PARAMS`) become :data:`MASK`, and so does a fragment
    holding ``name=value`` pairs; the rest (scheme, user, host, port, path) stays as
    written, so an operator still sees which endpoint is meant."""
    head, hash_sep, fragment = url.partition("#")
    base, query_sep, query = head.partition("?")
    m = _AUTHORITY_RE.match(base)
    if m is not None and "@" in m["authority"]:
        userinfo, host = m["authority"].rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        shown = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
        base = m["scheme"] + shown + m["rest"]
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _secret_param(k) else v) for k, v in pairs],
                              safe="*/:")
    if "=" in fragment:
        fragment = MASK
    return base + query_sep + query + hash_sep + fragment


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
