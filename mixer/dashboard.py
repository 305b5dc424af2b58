"""Ops subsystems of the mixer app: dashboard (login + live SSE), ``/metrics``, ``/readyz``,
alerts and webhooks. :func:`setup_ops` attaches them all to the app.

Routes:
- ``GET /dashboard`` — the live page (redirects to ``/dashboard/login`` without a session).
- ``GET|POST /dashboard/login``, ``POST /dashboard/logout`` — users from ``ops.users``
  (scrypt hashes), a signed ``HttpOnly; SameSite=Strict`` session cookie, failed logins
  limited per client address and per user name.
- ``GET /dashboard/api/snapshot`` — the latest sample as JSON (``?history=1``: with charts'
  history); ``GET /dashboard/events`` — server-sent events: ``init`` (snapshot + history)
  then ``sample`` after each health sample. Both answer 401 without a session.
- ``GET /metrics`` — Prometheus text (``Authorization: Bearer`` if ``ops.metrics_token``;
  without it, loopback clients only).
- ``GET /readyz`` — 200 once the health sampler runs and the mixer is not shutting down.

Each sample is serialised once and the same bytes are written to every viewer, so viewers
cost the mixer little (measured in ``benchmarks/dashboard_viewers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from syncclass.auth import (
    LoginRateLimiter,
    RevokedSessions,
    SessionSigner,
    hash_password,
    verify_password,
)
from syncclass.config import CountyConfig
from syncclass.protocol import dumps_strict

from .alerts import AlertEngine
from .core import Mixer
from .guard import reader_of
from .metrics import CONTENT_TYPE_LATEST, SyncclassCollector, make_registry, render
from .netstats import ClassroomHealth, MixerHealth, NetStatsCollector
from .webhooks import WebhookSender

logger = logging.getLogger(__name__)

COOKIE = "syncclass_ops"
HERE = Path(__file__).resolve().parent
STATIC = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
SSE_HEARTBEAT_S = 15.0
HISTORY_FIELDS = ("latency_ms", "loss_percent", "fps_in", "fps_out", "bitrate_in_kbps",
                  "bitrate_out_kbps", "rtt_ms", "jitter_ms", "audio_level_dbov")
"""Columns of each classroom's history rows (after ``ts_ms``) sent to the page's charts."""
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class Broadcaster:
    """The latest sample, serialised once, and a wake-up for every waiting viewer."""

    def __init__(self) -> None:
        self.payload: bytes = b""
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()
        self.viewers = 0

    def publish(self, payload: bytes) -> None:
        self.payload = payload
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, version: int, max_wait_s: float) -> bool:
        """Wait until a version newer than ``version`` exists; False on timeout/closing."""
        if self.version > version:
            return True
        if self.closed:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):  # not wait_for: see mixer.guard
                await self._changed.wait()
        return self.version > version and not self.closed

    def close(self) -> None:
        self.closed = True
        self._changed.set()


class Ops:
    """The ops subsystems of one mixer: ``start()`` then ``aclose()``."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer
        self.config: CountyConfig = mixer.config
        ops = self.config.ops
        self.ops = ops
        self.netstats = NetStatsCollector(mixer, ops)
        self.alerts = AlertEngine(ops.thresholds, ops.alert_hold_s, self._emit_alert)
        self.netstats.on_sample.append(self.alerts.on_sample)
        self.netstats.on_sample.append(self._publish)
        self.webhooks = [WebhookSender(w, mixer.events) for w in ops.webhooks]
        secret = ops.session_secret.encode() if ops.session_secret else os.urandom(32)
        self.signer = SessionSigner(secret)
        self.limiter = LoginRateLimiter(max_failures=ops.login_max_failures, window_s=60.0)
        self.users = {u.name: u.password_hash for u in ops.users}
        # Checked when the user is unknown, so timing does not tell which names exist.
        self._dummy_hash = hash_password(secrets.token_hex(8), log2n=14)
        self.revocations = RevokedSessions(Path(self.config.mixer.data_dir)
                                           / "sessions-revoked")
        """Logged-out sessions, shared with the node's other workers through a file in the
        data folder (and with other nodes by the cluster)."""
        self.collector = SyncclassCollector(mixer, self.netstats, self.alerts, self.webhooks)
        self.registry = make_registry(self.collector)
        self.broadcaster = Broadcaster()
        self.shutting_down = False

    async def start(self) -> None:
        for w in self.webhooks:
            w.start()
        self.netstats.start()
        await self.netstats.sample()  # the first sample: pages and /metrics have data at once

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self.broadcaster.close()

    async def aclose(self) -> None:
        self.begin_shutdown()
        await self.netstats.aclose()
        for w in self.webhooks:
            await w.aclose()

    @property
    def cluster_state(self) -> Callable[[], dict[str, Any]] | None:
        """Several nodes: the registry (``Cluster.summary``), shown on the dashboard and
        in ``/metrics``; set by the app."""
        return self.collector.cluster_state

    @cluster_state.setter
    def cluster_state(self, value: Callable[[], dict[str, Any]] | None) -> None:
        self.collector.cluster_state = value

    # -- alerts -------------------------------------------------------------------------------
    def _emit_alert(self, lesson_id: str | None, classroom_id: str, data: dict[str, Any]) -> None:
        self.mixer.emit("alert", lesson_id, classroom_id, **data)

    # -- sessions -----------------------------------------------------------------------------
    def user_of(self, request: web.Request) -> str | None:
        value = request.cookies.get(COOKIE)
        now = time.time()
        if value is None:
            return None
        user = self.signer.verify(value, now)
        if user not in self.users or self.revocations.revoked(value, now):
            return None
        return user

    def revoke(self, value: str) -> None:
        """Log the session cookie ``value`` out until it expires (one that does not verify
        is no session: nothing to revoke, and nothing written for it)."""
        now = time.time()
        if self.signer.verify(value, now) is None:
            return
        self.revocations.revoke(value, now + self.ops.session_lifetime_s)

    # -- payloads -----------------------------------------------------------------------------
    def snapshot(self, with_history: bool = False) -> dict[str, Any]:
        mh = self.netstats.mixer_health()
        snap = self.netstats.snapshot()
        recent = [e.to_dict() for e in self.mixer.events.history if e.name == "alert"][-20:]
        out: dict[str, Any] = {
            "county": self.config.county,
            "ts_ms": mh.ts_ms if mh else int(time.time() * 1000),
            "sample_interval_s": self.ops.sample_interval_s,
            "history_s": self.ops.history_s,
            "thresholds": self.ops.thresholds.model_dump(),
            "mixer": mh.to_dict() if mh else None,
            "classrooms": [h.to_dict() for h in snap.values()],
            "alerts_firing": [{"classroom_id": c, "kind": k} for c, k in self.alerts.firing],
            "recent_alerts": recent,
            "webhooks": [w.stats() for w in self.webhooks],
            "history_fields": list(HISTORY_FIELDS),
            "cluster": self.cluster_state() if self.cluster_state is not None else None,
        }
        if with_history:
            out["history"] = {
                cid: [_history_row(h) for h in self.netstats.history(cid)] for cid in snap
            }
            out["mixer_history"] = [[m.ts_ms, m.cpu_percent, m.loop_lag_ms]
                                    for m in self.netstats.mixer_history()]
        return out

    def _publish(self, healths: dict[str, ClassroomHealth], mh: MixerHealth) -> None:
        if self.broadcaster.viewers == 0 and self.broadcaster.version > 0:
            self.broadcaster.version += 1  # nobody watching: skip the serialisation
            self.broadcaster.payload = b""
            return
        self.broadcaster.publish(_sse("sample", self.snapshot()))


def _history_row(h: ClassroomHealth) -> list[Any]:
    d = h.to_dict()
    return [h.ts_ms, *(d[f] for f in HISTORY_FIELDS)]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    text = dumps_strict(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()


OPS_KEY = web.AppKey("ops", Ops)


def ops_of(app: web.Application) -> Ops:
    """The app's dashboard state (:class:`Ops`), for tests and tools."""
    return app[OPS_KEY]


# -- handlers ---------------------------------------------------------------------------------
def _unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"code": "auth_required", "message": "log in at /dashboard/login"}),
        content_type="application/json", headers={"Cache-Control": "no-store"})


def _client_key(request: web.Request) -> str:
    return f"ip:{request.remote or 'unknown'}"


def _login_keys(request: web.Request, user: str) -> list[str]:
    """Failed logins count per client address and per user at that address: a guesser
    is stopped, and a user is never locked out by failures from another address."""
    return [_client_key(request), f"user:{user}@{request.remote or 'unknown'}"]


def _page(name: str, **values: str) -> str:
    text = (HERE / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _login_page(message: str = "", status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    body = _page("login.html", message=html.escape(message))
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={**SECURITY_HEADERS, **(headers or {})})


def _same_origin(request: web.Request) -> bool:
    """Refuse cross-site form posts (login/logout CSRF): ``Sec-Fetch-Site``, when sent,
    must say same-origin (or ``none``: typed by the user); Origin, when sent, must be
    this host."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


async def login_get(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    if ops.user_of(request):
        raise web.HTTPSeeOther("/dashboard")
    return _login_page("" if ops.users else "No ops users are configured (ops.users).")


async def login_post(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    if not _same_origin(request):
        return _login_page("Cross-site login refused.", status=403)
    try:
        form = await request.post()
    except ValueError:
        return _login_page("Bad form.", status=400)
    user = str(form.get("user", "")).strip().lower()[:64]
    password = str(form.get("password", ""))[:1024]
    now = time.time()
    keys = _login_keys(request, user)
    wait = max(ops.limiter.blocked_for(k, now) for k in keys)
    if wait > 0:
        logger.warning("ops login: too many failures (%s, user %r); blocked %.0f s",
                       request.remote, user, wait)
        return _login_page(f"Too many failed logins. Try again in {int(wait) + 1} s.",
                           status=429, headers={"Retry-After": str(int(wait) + 1)})
    encoded = ops.users.get(user)
    # scrypt takes ~50 ms: off the event loop, so media keeps flowing.
    ok = await asyncio.to_thread(verify_password, password, encoded or ops._dummy_hash)
    if not ok or encoded is None:
        for k in keys:
            ops.limiter.failed(k, now)
        logger.warning("ops login failed for user %r from %s", user, request.remote)
        return _login_page("Wrong user name or password.", status=401)
    for k in keys:
        ops.limiter.succeeded(k)
    logger.info("ops login: %s from %s", user, request.remote)
    resp = web.HTTPSeeOther("/dashboard")
    resp.set_cookie(COOKIE, ops.signer.issue(user, now, ops.ops.session_lifetime_s),
                    max_age=ops.ops.session_lifetime_s, path="/", httponly=True,
                    samesite="Strict", secure=request.secure)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    if not _same_origin(request):  # a cross-site page must not log the user out
        return _login_page("Cross-site logout refused.", status=403)
    value = request.cookies.get(COOKIE)
    if value:
        ops.revoke(value)
    resp = web.HTTPSeeOther("/dashboard/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    user = ops.user_of(request)
    if user is None:
        raise web.HTTPFound("/dashboard/login")
    body = _page("dashboard.html", user=html.escape(user),
                 county=html.escape(ops.config.county))
    return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=(HERE / name).read_bytes(), content_type=STATIC[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def api_snapshot(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    if ops.user_of(request) is None:
        raise _unauthorized()
    return web.json_response(ops.snapshot(with_history=request.query.get("history") == "1"),
                             headers={"Cache-Control": "no-store"}, dumps=dumps_strict)


async def events(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    if ops.user_of(request) is None:
        raise _unauthorized()
    b = ops.broadcaster
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    b.viewers += 1
    try:
        version = b.version
        await resp.write(_sse("init", ops.snapshot(with_history=True)))
        while not b.closed:
            if await b.wait(version, SSE_HEARTBEAT_S):
                version = b.version
                if ops.user_of(request) is None:  # expired or logged out meanwhile
                    await resp.write(b"event: logout\ndata: {}\n\n")
                    break
                payload = b.payload or _sse("sample", ops.snapshot())
                await resp.write(payload)
            elif not b.closed:
                await resp.write(b": keep-alive\n\n")
    except (ConnectionError, RuntimeError):
        pass  # the viewer went away
    finally:
        b.viewers -= 1
    return resp


def _loopback(request: web.Request) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(request.remote or "").is_loopback
    return False


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text: with ``ops.metrics_token`` that Bearer token is required (or the
    ops API token, or a dashboard session); without it only loopback clients (a local
    Prometheus or node agent) and ops readers are served."""
    ops = request.app[OPS_KEY]
    token = ops.ops.metrics_token
    auth = request.headers.get("Authorization", "")
    scraper = token is not None and hmac.compare_digest(auth.encode(),
                                                        f"Bearer {token}".encode())
    if not scraper and not (token is None and _loopback(request)):
        reader = None
        with contextlib.suppress(web.HTTPException):
            reader = reader_of(request)
        if reader is None or not reader.is_ops:
            need = "metrics token required" if token else (
                "set ops.metrics_token to scrape from another host")
            raise web.HTTPUnauthorized(text=need + "\n", headers={"WWW-Authenticate": "Bearer"})
    body = render(ops.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS_KEY]
    ready = ops.netstats.running and not ops.shutting_down
    return web.json_response(
        {"ready": ready, "samples": ops.netstats.samples,
         "live_lessons": len(ops.mixer.lessons.live_lessons()),
         "sessions": len(ops.mixer.sessions)},
        status=200 if ready else 503)


def setup_ops(app: web.Application, mixer: Mixer) -> Ops:
    """Attach the dashboard, metrics, readiness, alerts and webhooks to the mixer app."""
    ops = Ops(mixer)
    app[OPS_KEY] = ops

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ops.start()
        yield
        await ops.aclose()

    async def on_shutdown(app: web.Application) -> None:
        ops.begin_shutdown()  # ends open event streams so shutdown does not wait on them

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.insert(0, on_shutdown)
    r = app.router
    r.add_get("/dashboard", dashboard_page)
    r.add_get("/dashboard/login", login_get)
    r.add_post("/dashboard/login", login_post)
    r.add_post("/dashboard/logout", logout)
    r.add_get("/dashboard/static/{name}", static_file)
    r.add_get("/dashboard/api/snapshot", api_snapshot)
    r.add_get("/dashboard/events", events)
    r.add_get("/metrics", metrics)
    r.add_get("/readyz", readyz)
    return ops
