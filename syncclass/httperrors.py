"""The one shape of an HTTP error answer: ``{"code": ..., "message": ...}`` as JSON.

Used by the mixer's APIs and the agent's control page alike, so clients parse one form.
"""

from __future__ import annotations

import json

from aiohttp import web


def json_error(exc_type: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """An aiohttp HTTP exception carrying a machine ``code`` and a human ``message``."""
    return exc_type(text=json.dumps({"code": code, "message": message}, ensure_ascii=False),
                    content_type="application/json")
