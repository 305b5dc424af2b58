"""The one shape of an HTTP error answer: ``{"code": ..., "message": ...}`` as JSON.

Used by the mixer's APIs and the agent's control page alike, so clients parse one form.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import ProtocolError
from .protocol import decode_object


def json_error(exc_type: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """An aiohttp HTTP exception carrying a machine ``code`` and a human ``message``."""
    return exc_type(text=json.dumps({"code": code, "message": message}, ensure_ascii=False),
                    content_type="application/json")


async def json_object_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request's body as a JSON object; 400 ``bad_json``/``bad_message`` (also for
    NaN/Infinity and nesting too deep to parse) or 413 ``too_large`` otherwise. An empty
    body is ``{}``."""
    raw = await request.read() if request.can_read_body else b""
    if not raw.strip():
        return {}
    try:
        return decode_object(raw, max_bytes)
    except ProtocolError as exc:
        if exc.code == "too_large":
            raise web.HTTPRequestEntityTooLarge(
                max_size=max_bytes, actual_size=len(raw),
                text=json.dumps({"code": exc.code, "message": exc.message}),
                content_type="application/json") from None
        raise json_error(web.HTTPBadRequest, exc.code, exc.message) from None
