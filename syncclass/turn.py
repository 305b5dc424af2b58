"""TURN relays for classrooms behind NAT and firewalls: URLs and time-limited credentials.

The mixer and a coturn server (``scripts/turnserver.sh``) share one secret. The mixer hands
each classroom, in its ``welcome``, credentials made with coturn's REST-API scheme
(draft-uberti-behave-turn-rest): ``username = "<expiry unix s>:<classroom id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``. coturn recomputes the HMAC and
refuses a username whose expiry has passed, so a leaked credential stops working by
itself and the secret never leaves the county's servers.

Pure: no sockets, no clock of its own (callers pass the time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .protocol import IceServer

if TYPE_CHECKING:
    from .config import TurnConfig

TurnTransport = Literal["udp", "tcp", "tls"]
"""How a classroom reaches the TURN server: UDP, TCP, or TLS over TCP (``turns:``)."""

_URL = re.compile(
    r"^(?P<scheme>turns?):(?P<host>\[[0-9a-fA-F:.]+\]|[^?:\[\]/@\s]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


@dataclass(frozen=True)
class TurnUrl:
    """One parsed TURN URL (RFC 7065), e.g. ``turns:turn.example.org:443?transport=tcp``."""

    url: str
    """The URL as written (handed to browsers and aiortc unchanged)."""
    host: str
    """Host name or IP address (IPv6 without brackets)."""
    port: int
    """TCP/UDP port (default 3478 for ``turn:``, 5349 for ``turns:``)."""
    transport: TurnTransport

    @classmethod
    def parse(cls, url: str) -> TurnUrl:
        """Parse ``url``; raise ``ValueError`` naming what is wrong."""
        m = _URL.match(url.strip())
        if m is None:
            raise ValueError(f"TURN URL {url!r} is not turn:HOST[:PORT][?transport=udp|tcp] "
                             f"or turns:HOST[:PORT][?transport=tcp]")
        scheme, host = m["scheme"], m["host"].strip("[]")
        if scheme == "turns" and m["transport"] == "udp":
            # DTLS to the TURN server: neither aioice nor this project's tests support it.
            raise ValueError(f"TURN URL {url!r}: turns: (TLS) runs over TCP only")
        port = int(m["port"]) if m["port"] else (5349 if scheme == "turns" else 3478)
        if not 0 < port < 65536:
            raise ValueError(f"TURN URL {url!r}: port {port} is out of range")
        transport: TurnTransport = ("tls" if scheme == "turns"
                                    else "tcp" if m["transport"] == "tcp" else "udp")
        return cls(url=url.strip(), host=host, port=port, transport=transport)


@dataclass(frozen=True)
class TurnCredential:
    """A time-limited TURN username/password pair for one classroom."""

    username: str
    """``"<expiry unix s>:<classroom id>"``."""
    credential: str
    """base64(HMAC-SHA1(shared secret, username))."""
    expires_s: int
    """Unix time, s, after which coturn refuses the pair (and ends allocations made with
    it: a lesson must end before this)."""


def turn_credential(secret: str, user: str, now_s: float, lifetime_s: int) -> TurnCredential:
    """coturn REST-API credentials for ``user`` (a classroom id), valid ``lifetime_s`` s
    from ``now_s`` (Unix time, s)."""
    if not secret:
        raise ValueError("the TURN shared secret is empty")
    if lifetime_s <= 0:
        raise ValueError(f"TURN credential lifetime must be positive, not {lifetime_s} s")
    if ":" in user:
        raise ValueError(f"TURN user {user!r} must not contain ':' (it ends the expiry)")
    expires = int(now_s) + int(lifetime_s)
    username = f"{expires}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username=username, credential=base64.b64encode(digest).decode(),
                          expires_s=expires)


def credential_expiry_s(username: str) -> int | None:
    """The expiry (Unix s) a REST-API ``username`` carries, ``None`` if it has none."""
    head, sep, _ = username.partition(":")
    return int(head) if sep and head.isdigit() else None


def ice_servers_for(turn: TurnConfig | None, user: str, now_s: float) -> list[IceServer]:
    """The ``ice_servers`` of a ``welcome`` for ``user`` (a classroom or observer id): one
    entry with every configured URL and fresh credentials; empty without TURN."""
    if turn is None:
        return []
    cred = turn_credential(turn.secret.get_secret_value(), user, now_s,
                           turn.credential_lifetime_s)
    return [IceServer(urls=list(turn.urls), username=cred.username,
                      credential=cred.credential)]


def advertise_addresses(sdp: str, mapping: Mapping[str, str]) -> str:
    """``sdp`` with each host candidate's address (and each ``c=`` line's) that is a key of
    ``mapping`` replaced by its value: a mixer behind a 1:1 NAT binds its private address
    but must tell classrooms its public one (pion's NAT 1:1 IPs). Ports are kept; the NAT
    forwards them unchanged."""
    if not mapping:
        return sdp
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            # foundation component transport priority ADDRESS port typ TYPE ...
            if len(parts) >= 8 and parts[6] == "typ" and parts[7] == "host" \
                    and parts[4] in mapping:
                parts[4] = mapping[parts[4]]
                line = " ".join(parts)
        elif line.startswith("c=IN IP"):
            parts = line.split(" ")
            if len(parts) == 3 and parts[2] in mapping:
                public = mapping[parts[2]]
                parts[1] = "IP6" if ":" in public else "IP4"
                parts[2] = public
                line = " ".join(parts)
        out.append(line)
    return "\r\n".join(out)


def credential_refresh_in_s(servers: Sequence[IceServer], server_time_ms: int,
                            margin_s: float) -> float | None:
    """Seconds after a ``welcome`` (sent at the mixer's ``server_time_ms``) from which its
    TURN credentials are too close to expiry to start a lesson with: ``margin_s`` before
    the earliest expiry, or half-way through their lifetime if that is shorter (so a short
    ``credential_lifetime_s`` cannot make every join fetch new ones). ``None``: nothing
    expires. Measured from the mixer's own clock, so a PC's clock skew does not matter."""
    expiries = [e for s in servers if (e := credential_expiry_s(s.username)) is not None]
    if not expiries:
        return None
    left_s = min(expiries) - server_time_ms / 1000
    return max(0.0, left_s - min(margin_s, left_s / 2))
