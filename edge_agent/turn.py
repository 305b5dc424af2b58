"""Which TURN URL an agent's peer connection uses.

The mixer hands out every configured URL (UDP, TCP, TLS on 443...). Browsers gather relay
candidates through all of them, but aiortc 1.16 gives aioice only the *first* TURN URL
it can use (``aiortc.rtcicetransport.connection_kwargs``), and aioice waits up to 5 s for a
relay allocation that a firewall silently drops before it gives up. So before each join
the agent probes the URLs at once, briefly, and hands aiortc the first one, in the
configured order of preference, that answered:

- ``turn:...?transport=udp``: a STUN Binding request (coturn answers it unauthenticated);
- ``turn:...?transport=tcp``: a TCP connection;
- ``turns:...``: a TCP connection and a TLS handshake verified like the relay will be.

If none answers, the first URL is used anyway (its failure then shows in aioice's log)
and host candidates still work wherever they can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

from aioice import stun
from aiortc import RTCIceServer

from syncclass.protocol import IceServer
from syncclass.turn import TurnUrl

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.5
"""How long a probe may take, s: a round trip to the county's TURN server plus a TLS
handshake is well under this; a blocked port never answers."""
GRACE_MIN_S = 0.5
"""Least time a preferred URL gets once a less preferred one answered, s (a loaded PC or
a busy TURN server may answer UDP a little later than the TCP handshake)."""
UDP_RESEND_S = (0.0, 0.1, 0.3, 0.7)
"""When the UDP probe (re)sends its STUN request, s after it starts: one lost datagram
must not push a school that can use UDP to TCP."""


class _StunReply(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        with contextlib.suppress(ValueError):
            message = stun.parse_message(data)
            if message.transaction_id == self.transaction_id and not self.answered.done():
                self.answered.set_result(None)


async def _probe(url: TurnUrl, tls: ssl.SSLContext) -> None:
    """Return once ``url``'s server answered; raise ``OSError``/``TimeoutError`` otherwise."""
    loop = asyncio.get_running_loop()
    if url.transport == "udp":
        request = stun.Message(message_method=stun.Method.BINDING,
                               message_class=stun.Class.REQUEST)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _StunReply(request.transaction_id), remote_addr=(url.host, url.port))
        try:
            start = loop.time()
            for at in UDP_RESEND_S:
                await asyncio.wait({protocol.answered}, timeout=max(0.0, start + at - loop.time()))
                if protocol.answered.done():
                    return
                transport.sendto(bytes(request))
            await protocol.answered  # the caller's timeout ends the wait
        finally:
            transport.close()
    stream, _ = await loop.create_connection(
        asyncio.Protocol, url.host, url.port,
        ssl=tls if url.transport == "tls" else None,
        server_hostname=url.host if url.transport == "tls" else None)
    stream.close()


async def choose_turn_server(servers: Sequence[IceServer],
                             tls: ssl.SSLContext | None = None) -> list[RTCIceServer]:
    """The ``iceServers`` for aiortc: the first of ``servers``' URLs (in their order) whose
    server answered a probe; ``[]`` without servers.

    A preferred URL that has not answered yet is waited for until :data:`PROBE_TIMEOUT_S`,
    or, once a less preferred one answered after ``t`` s, until ``max(GRACE_MIN_S, 4 t)``:
    the same server answering over TCP measures the round trip a UDP answer needs, so a
    school whose firewall drops UDP does not wait the whole timeout at every join."""
    candidates = [(TurnUrl.parse(u), s) for s in servers for u in s.urls]
    if not candidates:
        return []
    tls = tls or ssl.create_default_context()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = [asyncio.ensure_future(asyncio.wait_for(_probe(u, tls), PROBE_TIMEOUT_S))
             for u, _ in candidates]
    answered_at: dict[int, float] = {}
    chosen: int | None = None
    try:
        deadline = t0 + PROBE_TIMEOUT_S
        while True:
            for i, task in enumerate(tasks):
                if not task.done():
                    break
                if i in answered_at:
                    chosen = i
                    break
            if chosen is not None:
                break  # every more preferred URL failed
            pending = [t for t in tasks if not t.done()]
            if answered_at:
                first = min(answered_at.values())
                deadline = min(deadline, t0 + max(GRACE_MIN_S, 4 * (first - t0)))
            if not pending or loop.time() >= deadline:
                chosen = min(answered_at) if answered_at else None
                break
            done, _ = await asyncio.wait(pending, timeout=deadline - loop.time(),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                i = tasks.index(task)
                if task.exception() is None:
                    answered_at[i] = loop.time()
                else:
                    exc = task.exception()
                    logger.info("TURN %s unreachable: %s", candidates[i][0].url,
                                exc or type(exc).__name__)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if chosen is None:
        logger.warning("no TURN server answered (%s); trying %s anyway",
                       ", ".join(u.url for u, _ in candidates), candidates[0][0].url)
        chosen = 0
    url, server = candidates[chosen]
    logger.info("TURN: using %s (probed in %.0f ms)", url.url, (loop.time() - t0) * 1000)
    return [RTCIceServer(urls=url.url, username=server.username, credential=server.credential)]
