"""WebSocket guards: :func:`hello_deadline` closes a signaling socket that does not
authenticate in time (code 4408, error ``auth_timeout``); :func:`bounded_send` gives up a
send to a socket that does not read after ``mixer.send_timeout_s`` and drops it, so one
stuck client never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .limits import GuardStats

logger = logging.getLogger(__name__)

WS_CLOSE_AUTH_TIMEOUT = 4408
"""WebSocket close code for "no hello in time" (private range 4000-4999; 408 as in HTTP)."""


async def bounded_send(ws: web.WebSocketResponse, text: str, timeout_s: float,
                       transport: asyncio.Transport | None, who: str,
                       stats: GuardStats | None = None) -> bool:
    """Send ``text``; a peer that has not taken it within ``timeout_s`` (it does not read:
    every buffer is full) is dropped (its transport aborted). True if sent."""
    if ws.closed or (transport is not None and transport.is_closing()):
        return False
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the send completes, and the cancelled task runs on.
        async with asyncio.timeout(timeout_s):
            await ws.send_str(text)
        return True
    except TimeoutError:
        logger.warning("%s: does not read; dropped it after a send waited %.1f s",
                       who, timeout_s)
        if stats is not None:
            stats.send_timeouts += 1
        if transport is not None:
            transport.abort()
        return False
    except (ConnectionError, RuntimeError):
        return False


async def hello_deadline(ws: web.WebSocketResponse, authenticated: Callable[[], bool],
                         timeout_s: float,
                         on_timeout: Callable[[], Awaitable[None]]) -> None:
    """After ``timeout_s``, close ``ws`` with :data:`WS_CLOSE_AUTH_TIMEOUT` unless
    ``authenticated()``; ``on_timeout`` runs first (it sends the error message). The caller
    owns the task and cancels it when the socket ends."""
    await asyncio.sleep(timeout_s)
    if ws.closed or authenticated():
        return
    await on_timeout()
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        await asyncio.wait_for(ws.close(code=WS_CLOSE_AUTH_TIMEOUT,
                                        message=b"auth_timeout"), 5.0)
