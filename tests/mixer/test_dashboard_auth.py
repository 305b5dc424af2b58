"""Dashboard login, sessions, rate limiting and the live event stream (in-process mixer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from mixer.app import create_app
from tests.county import County

DEMO_USER, DEMO_PASSWORD = "ops", "syncclass-demo"


@pytest.fixture
async def url(county: County) -> AsyncIterator[str]:
    app = create_app(county.for_ops(login_max_failures=3).config("test"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, url: str, password: str = DEMO_PASSWORD,
                user: str = DEMO_USER) -> int:
    async with http.post(url + "/dashboard/login", data={"user": user, "password": password},
                         allow_redirects=False) as resp:
        return resp.status


async def test_no_data_without_login(url: str) -> None:
    async with client() as http:
        async with http.get(url + "/dashboard", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/dashboard/login"
        for path in ("/dashboard/api/snapshot", "/dashboard/api/snapshot?history=1",
                     "/dashboard/events"):
            async with http.get(url + path) as resp:
                body = await resp.text()
                assert resp.status == 401, path
                assert "hetou-3" not in body and "main-3-1" not in body
        async with http.get(url + "/dashboard/login") as resp:
            assert resp.status == 200 and 'name="password"' in await resp.text()
        # A forged cookie gets nothing either.
        http.cookie_jar.update_cookies({"syncclass_ops": "ops.9999999999.deadbeef"},
                                       response_url=aiohttp.client.URL(url))
        async with http.get(url + "/dashboard/api/snapshot") as resp:
            assert resp.status == 401


async def test_login_snapshot_logout(url: str) -> None:
    async with client() as http:
        assert await login(http, url, "wrong-password") == 401
        assert await login(http, url) == 303
        cookie = next(c for c in http.cookie_jar if c.key == "syncclass_ops")
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(url + "/dashboard") as resp:
            page = await resp.text()
            assert resp.status == 200 and "dashboard.js" in page
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        async with http.get(url + "/dashboard/api/snapshot?history=1") as resp:
            snap = await resp.json()
        ids = {c["classroom_id"] for c in snap["classrooms"]}
        assert ids == {"main-3-1", "hetou-3", "shanping-3"}
        assert snap["thresholds"]["latency_amber_ms"] == 150
        assert snap["thresholds"]["latency_red_ms"] == 400
        assert set(snap["history"]) == ids
        value = cookie.value
        async with http.post(url + "/dashboard/logout", allow_redirects=False) as resp:
            assert resp.status == 303
    # The old cookie value no longer works after logout, even if someone kept it.
    async with client() as http:
        http.cookie_jar.update_cookies({"syncclass_ops": value},
                                       response_url=aiohttp.client.URL(url))
        async with http.get(url + "/dashboard/api/snapshot") as resp:
            assert resp.status == 401


async def test_login_rate_limited(url: str) -> None:
    async with client() as http:
        for _ in range(3):
            assert await login(http, url, "guess-password") == 401
        # Blocked now, even with the right password, and told when to retry.
        async with http.post(url + "/dashboard/login",
                             data={"user": DEMO_USER, "password": DEMO_PASSWORD},
                             allow_redirects=False) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
            assert "Too many failed logins" in await resp.text()


async def test_cross_site_login_refused(url: str) -> None:
    async with client() as http, http.post(
        url + "/dashboard/login", data={"user": DEMO_USER, "password": DEMO_PASSWORD},
        headers={"Origin": "http://evil.example"}, allow_redirects=False,
    ) as resp:
        assert resp.status == 403


async def test_event_stream_pushes_samples(url: str) -> None:
    async with client() as http:
        assert await login(http, url) == 303
        async with http.get(url + "/dashboard/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events: list[tuple[str, dict[str, object]]] = []
            name = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if len(events) == 3:
                        break
    assert [e[0] for e in events] == ["init", "sample", "sample"]
    assert "history" in events[0][1] and "history" not in events[1][1]
    assert events[2][1]["ts_ms"] > events[1][1]["ts_ms"]  # type: ignore[operator]


async def test_shutdown_ends_open_event_streams(county: County) -> None:
    """A viewer's open stream must not hold the mixer's shutdown (aiohttp would wait up to
    its shutdown timeout for the handler)."""
    app = create_app(county.for_ops().config("test"))
    runner = web.AppRunner(app, shutdown_timeout=30.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    async with client() as http:
        assert await login(http, url) == 303
        async with http.get(url + "/dashboard/events") as resp:
            first = await resp.content.readline()
            assert first.startswith(b"event: init")
            cleanup = asyncio.ensure_future(runner.cleanup())
            rest = await asyncio.wait_for(resp.content.read(), 10.0)  # EOF: stream ended
            assert b"event: init" not in rest
            await asyncio.wait_for(cleanup, 10.0)


async def test_logout_holds_on_another_worker_and_after_a_restart(county: County) -> None:
    """Two mixers of one node (same data folder and session secret, as the media workers
    are): a logout on one is refused by the other at once and by a mixer started after it
    (a restarted worker), not only by the one that served it."""
    config = county.for_ops(session_secret="s" * 32).config("test")

    async def serve() -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"

    async def snapshot_status(url: str, value: str) -> int:
        async with client() as http:
            http.cookie_jar.update_cookies({"syncclass_ops": value},
                                           response_url=aiohttp.client.URL(url))
            async with http.get(url + "/dashboard/api/snapshot") as resp:
                return resp.status

    (one, url1), (two, url2) = await serve(), await serve()
    try:
        async with client() as http:
            assert await login(http, url1) == 303
            value = next(c.value for c in http.cookie_jar if c.key == "syncclass_ops")
            assert await snapshot_status(url2, value) == 200  # one login, valid on both
            async with http.post(url1 + "/dashboard/logout", allow_redirects=False) as resp:
                assert resp.status == 303
        assert await snapshot_status(url1, value) == 401
        assert await snapshot_status(url2, value) == 401
        three, url3 = await serve()
        try:
            assert await snapshot_status(url3, value) == 401
        finally:
            await three.cleanup()
    finally:
        await one.cleanup()
        await two.cleanup()
