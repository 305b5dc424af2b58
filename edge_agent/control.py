"""The agent's local control page (localhost only): Start lesson / End lesson, status.

``GET /`` the page (Chinese first, with English), ``GET /api/status`` JSON,
``POST /api/start`` and ``POST /api/end`` lesson commands (main classroom only),
``POST /api/raise-hand``, ``POST /api/mute``, ``POST /api/direct`` (导播),
``POST /api/courseware`` (共享课件),
``GET /api/preview.jpg`` (camera),
``GET``/``POST /api/devices`` (device choice). Only loopback Hosts are served, and POSTs
from other sites' pages are refused.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from aiohttp import web

from syncclass.errors import DeviceError
from syncclass.httperrors import json_error
from syncclass.protocol import EndLesson, Error, LessonState, StartLesson

from .agent import Agent
from .device_list import list_devices

AGENT_KEY = web.AppKey("agent", Agent)




async def index(request: web.Request) -> web.Response:
    html = resources.files("edge_agent").joinpath("control.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT_KEY].status())


async def _command(request: web.Request, message: StartLesson | EndLesson) -> web.Response:
    agent = request.app[AGENT_KEY]
    if agent.classroom.role != "main":
        raise json_error(web.HTTPForbidden, "not_allowed",
                     "只有主讲课堂可以开始/结束课程 (only the main classroom starts lessons)")
    try:
        reply = await agent.request(message)
    except ConnectionError:
        raise json_error(web.HTTPServiceUnavailable, "not_connected",
                     "未连接到混流服务器 (not connected to the mixer)") from None
    except TimeoutError:
        raise json_error(web.HTTPGatewayTimeout, "timeout",
                         "混流服务器无应答 (mixer did not answer)") from None
    if isinstance(reply, Error):
        raise json_error(web.HTTPConflict, reply.code, reply.message)
    assert isinstance(reply, LessonState)
    return web.json_response(reply.lesson.model_dump())


async def start(request: web.Request) -> web.Response:
    return await _command(request, StartLesson())


async def end(request: web.Request) -> web.Response:
    return await _command(request, EndLesson())


async def raise_hand(request: web.Request) -> web.Response:
    """``POST /api/raise-hand``: a receiving classroom raises its hand (举手)."""
    agent = request.app[AGENT_KEY]
    try:
        await agent.raise_hand()
    except PermissionError:
        raise json_error(web.HTTPForbidden, "not_allowed",
                     "只有听课课堂可以举手 (only receiving classrooms raise hands)") from None
    except ConnectionError:
        raise json_error(web.HTTPServiceUnavailable, "not_connected",
                     "未连接到混流服务器 (not connected to the mixer)") from None
    except LookupError:
        raise json_error(web.HTTPConflict, "no_lesson", "现在没有上课 (no live lesson)") from None
    return web.json_response({"hands_raised": agent.hands_raised})


async def direct(request: web.Request) -> web.Response:
    """``POST /api/direct`` ``{"source": "auto" | classroom id | "@courseware"}``: the
    teacher's 导播 buttons (main classroom only)."""
    agent = request.app[AGENT_KEY]
    try:
        body = await request.json()
    except ValueError:
        body = None
    source = body.get("source") if isinstance(body, dict) else None
    if not isinstance(source, str) or not 0 < len(source) <= 64:
        raise json_error(web.HTTPBadRequest, "bad_request",
                         '需要 {"source": "auto" 或课堂} (body must be {"source": "auto" | '
                         'classroom id | "@courseware"})')
    try:
        await agent.direct(source)
    except PermissionError:
        raise json_error(web.HTTPForbidden, "not_allowed",
                         "只有主讲课堂可以导播 (only the main classroom directs)") from None
    except ConnectionError:
        raise json_error(web.HTTPServiceUnavailable, "not_connected",
                         "未连接到混流服务器 (not connected to the mixer)") from None
    except LookupError:
        raise json_error(web.HTTPConflict, "no_lesson", "现在没有上课 (no live lesson)") from None
    return web.json_response({"directing": agent.directing})


async def courseware(request: web.Request) -> web.Response:
    """``POST /api/courseware`` ``{"on": true|false}``: 共享课件, share the teacher's
    courseware (main classroom with ``devices.courseware``) or stop."""
    agent = request.app[AGENT_KEY]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
        raise json_error(web.HTTPBadRequest, "bad_request",
                         '需要 {"on": true/false} (body must be {"on": true|false})')
    try:
        await agent.share_courseware(body["on"])
    except PermissionError as exc:
        raise json_error(web.HTTPForbidden, "not_allowed",
                         f"本课堂没有配置课件 (no courseware here): {exc}") from None
    return web.json_response(agent.status()["courseware"])


async def mute(request: web.Request) -> web.Response:
    """``POST /api/mute`` ``{"muted": true|false}``: mute or unmute the microphone."""
    agent = request.app[AGENT_KEY]
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("muted"), bool):
        raise json_error(web.HTTPBadRequest, "bad_request",
                     '需要 {"muted": true/false} (body must be {"muted": true|false})')
    agent.local.set_muted(body["muted"])
    return web.json_response({"mic_muted": agent.local.mic_muted})


async def preview(request: web.Request) -> web.Response:
    """``GET /api/preview.jpg``: the camera's current picture."""
    try:
        jpeg = await request.app[AGENT_KEY].local.preview_jpeg()
    except (DeviceError, TimeoutError) as exc:
        raise json_error(web.HTTPServiceUnavailable, "no_camera",
                     f"摄像头无画面 (no camera picture): {exc}") from None
    return web.Response(body=jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})


async def devices(request: web.Request) -> web.Response:
    """``GET /api/devices``: the PC's cameras and audio devices, and the ones in use."""
    found = await asyncio.to_thread(list_devices)
    return web.json_response({"available": found.to_dict(),
                              "current": request.app[AGENT_KEY].local.devices()})


async def choose_devices(request: web.Request) -> web.Response:
    """``POST /api/devices`` ``{"camera": {...}, "microphone": {...}, "speakers": {...}}``
    (any of them; fields as in the config): switch now and keep the choice."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        body = None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "bad_request", "需要 JSON 对象 (body must be a JSON "
                     "object)")
    try:
        current = await request.app[AGENT_KEY].local.choose(body)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "bad_request", str(exc)) from None
    except DeviceError as exc:
        raise json_error(web.HTTPConflict, "device_error",
                     f"设备无法打开，未做更改 (device failed, nothing changed): {exc}") from None
    return web.json_response(current)


@web.middleware
async def _local_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse requests that a web page elsewhere makes the browser send (DNS rebinding,
    cross-site POSTs): the Host must be loopback, and a browser's Origin must be ours."""
    host = request.host.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise json_error(web.HTTPForbidden, "not_local", "只允许本机访问 (local access only)")
    origin = request.headers.get("Origin")
    if request.method != "GET" and origin is not None and origin != f"http://{request.host}":
        raise json_error(web.HTTPForbidden, "cross_origin",
                     "拒绝来自其他网页的请求 (request from another site refused)")
    response: web.StreamResponse = await handler(request)
    return response


def create_control_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[_local_only])
    app[AGENT_KEY] = agent
    app.router.add_get("/", index)
    app.router.add_get("/api/status", status)
    app.router.add_post("/api/start", start)
    app.router.add_post("/api/end", end)
    app.router.add_post("/api/raise-hand", raise_hand)
    app.router.add_post("/api/mute", mute)
    app.router.add_post("/api/direct", direct)
    app.router.add_post("/api/courseware", courseware)
    app.router.add_get("/api/preview.jpg", preview)
    app.router.add_get("/api/devices", devices)
    app.router.add_post("/api/devices", choose_devices)
    return app


async def serve_control(agent: Agent, port: int) -> tuple[web.AppRunner, int]:
    """Serve the control page on 127.0.0.1:``port`` (0 = any free port)."""
    runner = web.AppRunner(create_control_app(agent), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)
