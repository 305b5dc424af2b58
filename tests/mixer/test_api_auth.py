"""Who may read the mixer's HTTP APIs (issue 8): nothing but health is served without a
credential; classroom and observer credentials see only their own pairings' lessons; ops
(dashboard session or ``ops.api_token``) see everything; report links swap ``?token=`` for
a cookie; the access log never shows a query string."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mixer.app import create_app
from mixer.dashboard import metrics
from syncclass.config import CountyConfig, default_config_path, parse_config
from tests.mixer.test_dashboard_auth import DEMO_PASSWORD, DEMO_USER

API_TOKEN = "ops-api-token-0123456789abcdef"
MAIN, HETOU, OTHER_MAIN, OTHER_RURAL = "main-3-1", "hetou-3", "other-main", "other-rural"
OBSERVER_TOKEN = "demo-observer-li-4b7e19c2d8"
OPEN = {"/healthz", "/readyz", "/join", "/observe", "/dashboard/login", "/metrics"}
"""Routes served without a credential (``/metrics``: to loopback clients only)."""


def two_pairings_config(tmp: Any, **ops: Any) -> CountyConfig:
    """The example county plus a second pairing (another main and rural classroom)."""
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    data["mixer"]["data_dir"] = str(tmp)
    data["media"].update({"width": 320, "height": 180, "fps": 10})
    data["recorder"] = {"enabled": False}
    data["analytics"] = {"enabled": True, "head_count_interval_s": 0}
    data["ops"].update({"api_token": API_TOKEN, "sample_interval_s": 0.2, **ops})
    data["classrooms"] += [
        {"id": OTHER_MAIN, "school": "shiyan-primary", "name": "实验小学 三(2)班",
         "label": "Shiyan 3-2", "role": "main", "token": "other-main-token-0123456789"},
        {"id": OTHER_RURAL, "school": "hetou-point", "name": "河头村教学点 四年级",
         "label": "Hetou G4", "role": "receiving", "token": "other-rural-token-0123456789"},
    ]
    data["pairings"].append({"id": "other-pairing", "main": OTHER_MAIN,
                             "receiving": [OTHER_RURAL]})
    return parse_config(data, "test")


@dataclass
class Running:
    app: web.Application
    url: str
    config: CountyConfig

    def bearer(self, classroom_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.classroom(classroom_id).token}"}


@pytest.fixture
async def mixer(tmp_path: Any) -> AsyncIterator[Running]:
    config = two_pairings_config(tmp_path)
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Running(app, f"http://127.0.0.1:{port}", config)
    await runner.cleanup()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-1", path)


async def test_every_route_needs_a_credential(mixer: Running) -> None:
    """Walks the app's whole router, so a route added later without a guard fails here."""
    checked = 0
    async with aiohttp.ClientSession() as http:
        for route in mixer.app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter") or info.get("prefix")
            if path is None or route.method not in ("GET", "POST"):
                continue
            url = mixer.url + _concrete(str(path))
            if path in OPEN or path.startswith(("/static/", "/dashboard/static/")):
                continue
            async with http.request(route.method, url, allow_redirects=False) as resp:
                checked += 1
                if path == "/dashboard":
                    assert resp.status == 302 and resp.headers["Location"].endswith("/login")
                elif path == "/ws":
                    assert resp.status in (400, 426), (path, resp.status)  # not an upgrade
                elif path == "/dashboard/logout":
                    assert resp.status == 303
                else:
                    assert resp.status == 401, (route.method, path, resp.status)
        assert checked >= 12, checked
        # The open ones stay open.
        for path in ("/healthz", "/readyz", "/metrics", "/join"):
            async with http.get(mixer.url + path) as resp:
                assert resp.status == 200, path


async def test_readers_see_only_their_pairings(mixer: Running) -> None:
    async with aiohttp.ClientSession() as http:
        for cid in (MAIN, OTHER_MAIN):
            async with http.post(mixer.url + "/api/lessons/start", json={"classroom_id": cid},
                                 headers=mixer.bearer(cid)) as resp:
                assert resp.status == 200, await resp.text()

        async def read(path: str, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.get(mixer.url + path, headers=headers) as resp:
                return resp.status, await resp.json()

        ops = {"Authorization": f"Bearer {API_TOKEN}"}
        observer = {"Authorization": f"Bearer {OBSERVER_TOKEN}"}
        status, everything = await read("/api/lessons", ops)
        assert status == 200
        assert {x["pairing_id"] for x in everything["lessons"]} == {"shiyan-rural-math",
                                                                     "other-pairing"}
        for headers, pairing in ((mixer.bearer(HETOU), "shiyan-rural-math"),
                                 (observer, "shiyan-rural-math"),
                                 (mixer.bearer(OTHER_RURAL), "other-pairing")):
            status, body = await read("/api/lessons", headers)
            assert status == 200
            assert [x["pairing_id"] for x in body["lessons"]] == [pairing], body
            status, stats = await read("/api/stats", headers)
            assert status == 200
            lesson_ids = {x["lesson_id"] for x in body["lessons"]}
            assert set(stats["media"]) == lesson_ids and "guard" not in stats
        status, stats = await read("/api/stats", ops)
        assert len(stats["media"]) == 2 and stats["guard"]["header_timeouts"] == 0
        # Ops-only routes: a classroom is refused, ops are served.
        for path in ("/api/recorder", "/api/observers"):
            assert (await read(path, mixer.bearer(MAIN)))[0] == 403
            assert (await read(path, ops))[0] == 200
        # A dashboard session reads everything too.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ui:
            async with ui.post(mixer.url + "/dashboard/login", allow_redirects=False,
                               data={"user": DEMO_USER, "password": DEMO_PASSWORD}) as resp:
                assert resp.status == 303
            async with ui.get(mixer.url + "/api/lessons") as resp:
                assert resp.status == 200 and len((await resp.json())["lessons"]) == 2
            async with ui.get(mixer.url + "/api/recorder") as resp:
                assert resp.status == 200


async def test_wrong_credentials_are_refused_then_rate_limited(mixer: Running) -> None:
    limit = int(mixer.config.mixer.auth_failures_per_min)
    codes = []
    async with aiohttp.ClientSession() as http:
        for i in range(limit + 2):
            async with http.get(mixer.url + "/api/stats",
                                headers={"Authorization": f"Bearer guess-{i:04d}-xxxxxxxx"}) as r:
                codes.append(((await r.json())["code"], r.status))
        assert codes[0] == ("auth_failed", 401)
        assert codes[-1] == ("rate_limited", 429), codes
        # Even the right credential waits until the address is out of the penalty box.
        async with http.get(mixer.url + "/api/stats", headers=mixer.bearer(MAIN)) as r:
            assert r.status == 429


async def test_metrics_remote_scrapers_need_a_token(tmp_path: Any) -> None:
    """Without ``ops.metrics_token`` only loopback scrapes; a remote one needs a token."""
    app = create_app(two_pairings_config(tmp_path))
    remote = make_mocked_request("GET", "/metrics", app=app).clone(remote="203.0.113.7")
    with pytest.raises(web.HTTPUnauthorized, match="Unauthorized"):
        await metrics(remote)
    local = make_mocked_request("GET", "/metrics", app=app).clone(remote="127.0.0.1")
    assert (await metrics(local)).status == 200
    with_token = make_mocked_request("GET", "/metrics", app=app,
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert (await metrics(with_token.clone(remote="203.0.113.7"))).status == 200
    # With a metrics token even loopback needs it.
    app2 = create_app(two_pairings_config(tmp_path, metrics_token="scrape-token-0123456789"))
    with pytest.raises(web.HTTPUnauthorized):
        await metrics(make_mocked_request("GET", "/metrics", app=app2).clone(remote="127.0.0.1"))
    scrape = make_mocked_request("GET", "/metrics", app=app2,
                                 headers={"Authorization": "Bearer scrape-token-0123456789"})
    assert (await metrics(scrape.clone(remote="127.0.0.1"))).status == 200


async def test_report_link_token_becomes_a_cookie_and_never_a_log_line(
        mixer: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    main_token = mixer.config.classroom(MAIN).token
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(mixer.url + "/api/lessons/start", json={"classroom_id": MAIN},
                             headers=mixer.bearer(MAIN)) as resp:
            lesson_id = (await resp.json())["lesson_id"]
        await asyncio.sleep(0.5)
        async with http.post(mixer.url + "/api/lessons/end", json={"classroom_id": MAIN},
                             headers=mixer.bearer(MAIN)) as resp:
            assert resp.status == 200
        for _ in range(100):
            async with http.get(f"{mixer.url}/api/reports/{lesson_id}",
                                headers=mixer.bearer(MAIN)) as resp:
                if (await resp.json()).get("ready"):
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the report was never ready")
        page = f"{mixer.url}/reports/{lesson_id}/"
        # JSON APIs take no query token at all.
        async with http.get(f"{mixer.url}/api/reports/{lesson_id}?token={main_token}") as resp:
            assert resp.status == 401
        # Another pairing's credential: refused.
        other = mixer.config.classroom(OTHER_MAIN).token
        async with http.get(f"{page}?token={other}", allow_redirects=False) as resp:
            assert resp.status == 403
        # The link: 303 to the page without the token, plus a cookie for this report only.
        async with http.get(f"{page}?token={main_token}", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/reports/{lesson_id}/"
            cookie = resp.cookies["syncclass_report"]
            assert cookie["httponly"] and cookie["path"] == f"/reports/{lesson_id}/"
            assert main_token not in cookie.value
        async with http.get(page) as resp:  # the browser follows with the cookie
            assert resp.status == 200 and "<svg" in await resp.text()
        async with http.get(page + "report.json") as resp:
            assert resp.status == 200 and (await resp.json())["lesson"]["lesson_id"] == lesson_id
        # The cookie is worth nothing without its signature, or for another lesson.
        jar.clear()
        # (The last hex digit changed for sure: replacing it by "0" failed the test
        # whenever it already was "0", 1 run in 16.)
        forged = cookie.value[:-1] + ("1" if cookie.value.endswith("0") else "0")
        async with http.get(page, cookies={"syncclass_report": forged}) as r:
            assert r.status == 401
        async with http.get(page) as resp:
            assert resp.status == 401
        # Query tokens on other routes are never logged either.
        async with http.get(f"{mixer.url}/api/lessons?token={main_token}") as resp:
            assert resp.status == 401
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(f"/reports/{lesson_id}/" in line for line in access), access
    assert any('"GET /api/lessons HTTP/1.1" 401' in line for line in access), access
    assert not any(main_token in line or other in line for line in access), access
