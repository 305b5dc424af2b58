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
import time
from collections.abc import Sequence

from aioice import stun
from aiortc import RTCIceServer

from syncclass.protocol import IceServer
from syncclass.turn import TurnUrl

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.5
"""How long a probe may take, s: a round trip to the county's TURN server plus a TLS
handshake is well under this; a blocked port never answers."""


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
            # Three tries: one lost datagram must not push a UDP-capable school to TCP.
            for _ in range(3):
                transport.sendto(bytes(request))
                done, _ = await asyncio.wait({protocol.answered}, timeout=PROBE_TIMEOUT_S / 3)
                if done:
                    return
            raise TimeoutError("no STUN answer")
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
    server answered a probe within :data:`PROBE_TIMEOUT_S`; ``[]`` without servers."""
    candidates = [(TurnUrl.parse(u), s) for s in servers for u in s.urls]
    if not candidates:
        return []
    tls = tls or ssl.create_default_context()
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(asyncio.wait_for(_probe(u, tls), PROBE_TIMEOUT_S))
             for u, _ in candidates]
    chosen = candidates[0]
    try:
        # In order of preference: the first success wins as soon as every URL before it
        # has failed, without waiting for the ones after it.
        for (url, server), task in zip(candidates, tasks, strict=True):
            try:
                await task
            except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
                logger.info("TURN %s unreachable: %s", url.url, exc or type(exc).__name__)
                continue
            chosen = (url, server)
            break
        else:
            logger.warning("no TURN server answered (%s); trying %s anyway",
                           ", ".join(u.url for u, _ in candidates), chosen[0].url)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    url, server = chosen
    logger.info("TURN: using %s (probed in %.0f ms)", url.url, (time.monotonic() - t0) * 1000)
    return [RTCIceServer(urls=url.url, username=server.username, credential=server.credential)]
