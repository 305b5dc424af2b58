"""Issue 18, part B: what a hostile client could do to the mixer's APIs and signaling, each
case now refused (in process: the mixer's app on loopback, real sockets).

Secrets never shown (item 3), NaN/Infinity refused (4), a finished lesson's media state
released (5), credential checks rate-limited per address (6), and the smaller ones (8):
sockets without hello, deep nesting, pings, observer offers, comments, cross-site logout,
observer data channels."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from mixer.analytics import ANALYTICS_KEY
from mixer.app import create_app
from mixer.core import MIXER_KEY
from mixer.dashboard import OPS_KEY
from mixer.guard.rates import WS_CLOSE_TOO_MANY_ERRORS
from mixer.media import LessonMedia
from mixer.observer import OBSERVERS_KEY
from mixer.report import build_report, write_report
from mixer.store import ReportStore
from mixer.webhooks import WebhookSender
from syncclass.config import CountyConfig, WebhookConfig, parse_config
from syncclass.errors import ConfigError, ProtocolError
from syncclass.events import Event, EventBus
from syncclass.protocol import Stats, parse_client_message
from syncclass.redact import redact_text, redact_url
from syncclass.rtc import new_peer_connection, use_host_addresses
from tests.county import County
from tests.mixer.test_api_auth import API_TOKEN, HETOU, MAIN, Running, two_pairings
from tests.mixer.test_dashboard_auth import DEMO_PASSWORD, DEMO_USER, client, login
from tests.mixer.test_observer import (
    OBS_TOKEN,
    OBSERVER,
    _offer,
    observe,
    start_lesson,
    with_other_pairing,
)
from tests.mixer.test_report_files import data_for, lesson_at

HOOK_PASSWORD, HOOK_KEY, DB_SECRET = "hook-pw-5ecret", "hook-key-5ecret", "db-pw-5ecret"
OTHER_ADDRESS = "127.0.0.2"
"""A second loopback address: the 'attacker' elsewhere (Linux routes all of 127/8)."""


def _strict_json(text: str) -> Any:
    """Parse as a browser would: NaN/Infinity are errors."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


@contextlib.asynccontextmanager
async def _serve(config: CountyConfig) -> AsyncIterator[Running]:
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Running(app, f"http://127.0.0.1:{port}", config)
    await runner.cleanup()


def _config(tmp: Path, mixer: dict[str, Any] | None = None, **ops: Any) -> CountyConfig:
    config = two_pairings(County(tmp)).for_ops(**ops).config()
    data = config.model_dump(mode="json")
    data["mixer"].update(mixer or {})
    return parse_config(data, "test")


def _from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address``."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _report_ready(http: aiohttp.ClientSession, run: Running, lesson_id: str,
                        headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(150):
        async with http.get(f"{run.url}/api/reports/{lesson_id}", headers=headers) as resp:
            body = dict(_strict_json(await resp.text()))
            if body.get("ready"):
                return body
        await asyncio.sleep(0.1)
    raise AssertionError("the report was never ready")


async def _lesson(http: aiohttp.ClientSession, run: Running, action: str) -> aiohttp.ClientResponse:
    async with http.post(f"{run.url}/api/lessons/{action}", json={"classroom_id": MAIN},
                         headers=run.bearer(MAIN)) as resp:
        await resp.read()
        return resp


# -- item 3: no secret in any reply, event, metric or log line ---------------------------------
def test_redact_url_hides_passwords_and_keys() -> None:
    assert redact_url("postgresql://reports:" + DB_SECRET + "@db.county:5432/syncclass") == (
        "postgresql://reports:***@db.county:5432/syncclass")
    shown = redact_url(f"https://u:{HOOK_PASSWORD}@hooks.example/in?token={HOOK_KEY}&room=3"
                       f"&X-Amz-Signature={HOOK_KEY}&api_key={HOOK_KEY}")
    assert HOOK_PASSWORD not in shown and HOOK_KEY not in shown
    assert shown.startswith("https://u:***@hooks.example/in?") and "room=3" in shown
    assert redact_url("http://127.0.0.1:8700/x") == "http://127.0.0.1:8700/x"  # nothing to hide
    assert DB_SECRET not in redact_url(f"postgresql://u:{DB_SECRET}@h:notaport/db")
    line = redact_text(f"ClientError: cannot reach https://u:{HOOK_PASSWORD}@h/x?key={HOOK_KEY}.")
    assert HOOK_PASSWORD not in line and HOOK_KEY not in line and "https://u:***@h/x" in line
    # The report store's URL as shown (errors, replies, logs).
    url = f"postgresql://reports:{DB_SECRET}@127.0.0.1:1/syncclass"
    assert DB_SECRET not in ReportStore(url).shown_url
    with pytest.raises(ConfigError) as err:
        ReportStore(f"mysql://root:{DB_SECRET}@h/db")
    assert DB_SECRET not in str(err.value)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A webhook receiver on loopback; its URL (with credentials) and the bodies it got."""
    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://ops:{HOOK_PASSWORD}@127.0.0.1:{port}/hook?token={HOOK_KEY}", bodies
    await runner.cleanup()


async def test_report_api_webhook_metrics_and_dashboard_show_no_secret(
        tmp_path: Path, hook: tuple[str, list[bytes]]) -> None:
    hook_url, bodies = hook
    county = two_pairings(County(tmp_path)).for_ops(webhooks=[{
        "url": hook_url, "secret": "webhook-secret-0123456789", "events": ["report_ready"]}])
    # A database URL with a secret (sqlite takes the query as part of its file name).
    county.data["analytics"]["database_url"] = (
        f"sqlite:///{tmp_path}/analytics.db?password={DB_SECRET}")
    config = county.config("test")
    secrets = (HOOK_PASSWORD, HOOK_KEY, DB_SECRET)
    async with _serve(config) as run:
        async with client() as http:
            lesson_id = _strict_json(await (await http.post(
                run.url + "/api/lessons/start", json={"classroom_id": MAIN},
                headers=run.bearer(MAIN))).text())["lesson_id"]
            await asyncio.sleep(0.3)
            assert (await _lesson(http, run, "end")).status == 200
            # A receiving classroom's token reads the report's status: no database password.
            body = await _report_ready(http, run, lesson_id, run.bearer(HETOU))
            assert body["paths"]["database"].startswith("sqlite:///")
            shown = json.dumps(body)
            for _ in range(100):
                if bodies:
                    break
                await asyncio.sleep(0.1)
            assert bodies, "report_ready was never delivered"
            event = _strict_json(bodies[0].decode())
            assert event["event"] == "report_ready" and "database" in event["data"]
            async with http.get(run.url + "/metrics") as resp:
                metrics = await resp.text()
            assert "syncclass_webhook_events" in metrics
            assert await login(http, run.url) == 303
            async with http.get(run.url + "/dashboard/api/snapshot") as resp:
                snapshot = await resp.text()
            assert '"webhooks"' in snapshot
            for text in (shown, bodies[0].decode(), metrics, snapshot):
                for secret in secrets:
                    assert secret not in text, (secret, text[:300])


async def test_failed_webhook_delivery_log_shows_no_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mixer.webhooks")
    bus = EventBus()
    # Port 1 on loopback: refused at once.
    url = f"http://ops:{HOOK_PASSWORD}@127.0.0.1:1/hook?api_key={HOOK_KEY}"
    sender = WebhookSender(WebhookConfig(url=url, secret="webhook-secret-0123456789",
                                         max_attempts=2), bus, backoff_initial_s=0.01)
    sender.start()
    bus.emit(Event("alert", 1, "l-1", "hetou-3", {"kind": "latency"}))
    for _ in range(200):
        if sender.failed:
            break
        await asyncio.sleep(0.02)
    stats = sender.stats()
    await sender.aclose()
    assert sender.failed == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("giving up" in line for line in lines), lines
    for text in [*lines, json.dumps(stats)]:
        assert HOOK_PASSWORD not in text and HOOK_KEY not in text, text


# -- item 4: NaN/Infinity --------------------------------------------------------------------------
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused_at_the_protocol(number: str) -> None:
    raw = '{"type": "stats", "frames_received": 1, "fps": 10, "latency_ms": {"main-3-1": %s}}'
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw % number)
    assert err.value.code == "bad_json"
    with pytest.raises(ValueError):  # the typed model refuses them too
        Stats.model_validate({"frames_received": 1, "fps": 10,
                              "latency_ms": {"main-3-1": float(number)}})


async def test_nan_stats_never_reach_lessons_api_or_dashboard(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path)) as run:
        async with client() as http, http.ws_connect(run.url + "/ws") as ws:
            await ws.send_json({"type": "hello", "classroom_id": HETOU,
                                "token": run.config.classroom(HETOU).token})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            await ws.send_str('{"type": "stats", "frames_received": 5, "fps": 10, '
                              '"latency_ms": {"main-3-1": NaN}, "reconnects": 0}')
            assert (await ws.receive_json(timeout=5))["code"] == "bad_json"
            await run.app[OPS_KEY].netstats.sample()
            async with http.get(run.url + "/api/lessons",
                                headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
                status = _strict_json(await resp.text())
            assert HETOU in status["classrooms"]
            assert await login(http, run.url) == 303
            async with http.get(run.url + "/dashboard/api/snapshot?history=1") as resp:
                _strict_json(await resp.text())


def test_report_files_carry_no_nan(tmp_path: Path) -> None:
    """Should a non-finite number reach a report (it no longer can from the wire), the
    files stay valid: null in the JSON, no "nan" coordinate in the page."""
    import datetime as dt

    from syncclass.config import default_config_path, load_config

    data = data_for(lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone()))
    for sample in data.network["hetou-3"]:
        sample["latency_ms"] = math.nan
        sample["rtt_ms"] = math.inf
    report = build_report(load_config(default_config_path()), data, generated_ms=1)
    paths = write_report(report, tmp_path / "r")
    _strict_json(Path(paths["json"]).read_text(encoding="utf-8"))
    page = Path(paths["html"]).read_text(encoding="utf-8").lower()
    assert 'data-chart="latency"' in page
    assert not re.search(r"\b(nan|inf|infinity)\b", page)


# -- item 5: a finished lesson's media state is released; start/end is rate-limited ---------------
async def test_finished_lesson_releases_its_media_state(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path, {"lesson_actions_per_min": 4})) as run:
        mixer, analytics = run.app[MIXER_KEY], run.app[ANALYTICS_KEY]
        async with client() as http:
            lesson_id = _strict_json(await (await http.post(
                run.url + "/api/lessons/start", json={"classroom_id": MAIN},
                headers=run.bearer(MAIN))).text())["lesson_id"]
            la = analytics.lessons[lesson_id]
            assert isinstance(la.media, LessonMedia)
            await asyncio.sleep(0.3)
            assert (await _lesson(http, run, "end")).status == 200
            await _report_ready(http, run, lesson_id, run.bearer(MAIN))
            assert lesson_id not in mixer.media
            assert la.media is None and not la.voices and not la.network
            gc.collect()
            assert not [o for o in gc.get_objects()
                        if isinstance(o, LessonMedia) and o.lesson.lesson_id == lesson_id]
            # Start/end per classroom is limited (4 per minute here: 2 used).
            assert (await _lesson(http, run, "start")).status == 200
            assert (await _lesson(http, run, "end")).status == 200
            resp = await _lesson(http, run, "start")
            assert resp.status == 429


# -- item 6: credential checks are rate-limited per address ----------------------------------------
async def test_observer_hello_guessing_is_rate_limited(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path)) as run, client() as http:
        codes = []
        for i in range(int(run.config.mixer.auth_failures_per_min) + 1):
            async with http.ws_connect(run.url + "/ws") as ws:
                await ws.send_json({"type": "observer_hello", "observer_id": OBSERVER,
                                    "token": f"guess-{i:04d}-xxxxxxxx"})
                codes.append((await ws.receive_json(timeout=5))["code"])
        assert codes[0] == "auth_failed" and codes[-1] == "rate_limited", codes
        # The right credential from this address now waits too.
        async with http.ws_connect(run.url + "/ws") as ws:
            reply = await observe(ws)
            assert reply["type"] == "error" and reply["code"] == "rate_limited", reply


async def test_comments_api_limits_guessing_and_takes_ops_readers(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path)) as run:
        async with client() as http:
            lesson_id = _strict_json(await (await http.post(
                run.url + "/api/lessons/start", json={"classroom_id": MAIN},
                headers=run.bearer(MAIN))).text())["lesson_id"]
            url = f"{run.url}/api/lessons/{lesson_id}/comments"
            # README: a dashboard session and the ops API token read comments.
            async with http.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as r:
                assert r.status == 200, await r.text()
            assert await login(http, run.url) == 303
            async with http.get(url) as r:
                assert r.status == 200 and (await r.json())["comments"] == []
        async with _from(OTHER_ADDRESS) as guesser:
            statuses = []
            for i in range(int(run.config.mixer.auth_failures_per_min) + 1):
                async with guesser.get(url, headers={"Authorization": f"Bearer g-{i:04d}"}) as r:
                    statuses.append(r.status)
            assert statuses[0] == 401 and statuses[-1] == 429, statuses
            async with guesser.get(url, headers=run.bearer(HETOU)) as r:
                assert r.status == 429  # no oracle: even a right guess is not answered
        async with client() as http, http.get(url, headers=run.bearer(HETOU)) as r:
            assert r.status == 200  # the classroom at its own address is not locked out


async def test_hand_raise_failures_count_per_address(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path)) as run:
        async with _from(OTHER_ADDRESS) as guesser:
            statuses = []
            for i in range(int(run.config.mixer.auth_failures_per_min) + 1):
                async with guesser.post(run.url + "/api/hand", json={"classroom_id": HETOU},
                                        headers={"Authorization": f"Bearer g-{i:04d}"}) as r:
                    statuses.append(r.status)
            assert statuses[0] == 401 and statuses[-1] == 429, statuses
        # Another address is not blocked: the classroom is told there is no lesson.
        async with client() as http, http.post(run.url + "/api/hand",
                                               json={"classroom_id": HETOU},
                                               headers=run.bearer(HETOU)) as r:
            assert r.status == 409, await r.text()


async def test_dashboard_login_lockout_is_per_address(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path, login_max_failures=3)) as run:
        async with _from(OTHER_ADDRESS) as attacker:
            statuses = [await login(attacker, run.url, f"guess-{i}") for i in range(6)]
            assert statuses[:3] == [401] * 3 and statuses[-1] == 429, statuses
            assert await login(attacker, run.url) == 429  # the attacker stays locked out
        async with client() as http:
            assert await login(http, run.url, DEMO_PASSWORD, DEMO_USER) == 303


# -- item 8: the smaller holes ---------------------------------------------------------------------
async def test_socket_without_hello_is_closed_after_a_few_refusals(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _serve(_config(tmp_path)) as run, client() as http, \
            http.ws_connect(run.url + "/ws") as ws:
        for i in range(200):
            await ws.send_json({"type": "ping", "id": i})
        errors = 0
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != WSMsgType.TEXT:
                break
            assert json.loads(msg.data)["code"] == "auth_required"
            errors += 1
        limit = run.config.mixer.max_errors_before_hello
        assert errors == limit and ws.close_code == WS_CLOSE_TOO_MANY_ERRORS, (errors, msg)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refused) <= limit + 1, [r.getMessage() for r in refused]


async def test_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    deep = "[" * 60_000 + "]" * 60_000
    with pytest.raises(ProtocolError) as err:
        parse_client_message(deep[:30_000], 65_536)
    assert err.value.code == "bad_json"
    async with _serve(_config(tmp_path, {"max_message_bytes": 200_000})) as run, client() as http:
        async with http.ws_connect(run.url + "/ws") as ws:
            await ws.send_json({"type": "hello", "classroom_id": HETOU,
                                "token": run.config.classroom(HETOU).token})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            await ws.send_str('{"type": "stats", "x": ' + deep)
            reply = await ws.receive_json(timeout=5)
            assert reply["code"] == "bad_json" and "deeply" in reply["message"], reply
            await ws.send_json({"type": "ping", "id": 1})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"
        for path in ("/api/lessons/start", "/api/hand"):
            async with http.post(run.url + path, data=deep, headers=run.bearer(MAIN)) as r:
                assert r.status == 400, (path, r.status)
                assert (await r.json())["code"] == "bad_json"


async def test_pings_are_limited(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path, {"pings_per_min": 3})) as run, client() as http, \
            http.ws_connect(run.url + "/ws") as ws:
        await ws.send_json({"type": "hello", "classroom_id": HETOU,
                            "token": run.config.classroom(HETOU).token})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        for i in range(10):
            await ws.send_json({"type": "ping", "id": i})
        await ws.send_json({"type": "no-such-type"})  # its error marks the end
        pongs = []
        while (msg := await ws.receive_json(timeout=5))["type"] != "error":
            pongs.append(msg["id"])
        assert pongs == [0, 1, 2]


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """The observer tests' county with tight limits: 2 joins, 3 comments per minute."""
    county = with_other_pairing(County(tmp_path))
    county.mixer.update({"joins_per_min": 2, "comments_per_min": 3})
    config = county.config()
    use_host_addresses(config.mixer.ice_host_addresses)
    async with TestClient(TestServer(create_app(config))) as c:
        yield c
    use_host_addresses(None)


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next message that is no layout or lesson state."""
    while (msg := await ws.receive_json(timeout=10))["type"] in ("layout", "lesson_state"):
        pass
    return dict(msg)


async def test_observer_offers_count_as_joins(observed: TestClient[Any, Any]) -> None:
    await start_lesson(observed)
    async with observed.ws_connect("/ws") as ws:
        assert (await observe(ws))["type"] == "observer_welcome"
        replies = []
        for _ in range(3):
            await ws.send_json({"type": "offer", "sdp": await _offer(
                {"video": "recvonly", "audio": "recvonly"})})
            replies.append(await _reply(ws))
        assert [r["type"] for r in replies[:2]] == ["answer", "answer"], replies
        assert replies[2]["code"] == "rate_limited", replies[2]
        pc = observed.app[OBSERVERS_KEY].sessions[OBSERVER].pc
    for _ in range(50):
        if pc is None or pc.connectionState == "closed":
            break
        await asyncio.sleep(0.1)


async def test_observer_data_channel_is_refused(observed: TestClient[Any, Any]) -> None:
    await start_lesson(observed)
    pc = new_peer_connection()
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    assert "m=application" in sdp
    async with observed.ws_connect("/ws") as ws:
        assert (await observe(ws))["type"] == "observer_welcome"
        await ws.send_json({"type": "offer", "sdp": sdp})
        reply = await _reply(ws)
        assert reply["code"] == "not_allowed" and "data channel" in reply["message"], reply
        assert observed.app[OBSERVERS_KEY].sessions[OBSERVER].pc is None


async def test_comments_are_limited_and_paged(observed: TestClient[Any, Any]) -> None:
    lesson = await start_lesson(observed)
    async with observed.ws_connect("/ws") as ws:
        assert (await observe(ws))["type"] == "observer_welcome"
        replies = []
        for i in range(4):
            await ws.send_json({"type": "comment", "text": f"note {i}"})
            replies.append(await _reply(ws))
        assert [r["type"] for r in replies[:3]] == ["comment_added"] * 3, replies
        assert replies[3]["code"] == "rate_limited", replies[3]
    url = f"/api/lessons/{lesson['lesson_id']}/comments"
    auth = {"Authorization": f"Bearer {OBS_TOKEN}"}
    first = await (await observed.get(url + "?limit=2", headers=auth)).json()
    assert [c["seq"] for c in first["comments"]] == [1, 2] and first["next_after"] == 2
    rest = await (await observed.get(f"{url}?after=2&limit=2", headers=auth)).json()
    assert [c["seq"] for c in rest["comments"]] == [3] and rest["next_after"] is None
    for bad in ("?limit=0", "?limit=100000", "?after=x", "?after=-1"):
        assert (await observed.get(url + bad, headers=auth)).status == 400, bad


async def test_cross_site_logout_is_refused(tmp_path: Path) -> None:
    async with _serve(_config(tmp_path)) as run, client() as http:
        assert await login(http, run.url) == 303
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            async with http.post(run.url + "/dashboard/logout", headers=headers,
                                 allow_redirects=False) as resp:
                assert resp.status == 403, headers
                assert "syncclass_ops" not in resp.cookies
            async with http.get(run.url + "/dashboard/api/snapshot") as resp:
                assert resp.status == 200  # still logged in
        async with http.post(run.url + "/dashboard/logout", allow_redirects=False,
                             headers={"Origin": run.url, "Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 303
        async with http.get(run.url + "/dashboard/api/snapshot") as resp:
            assert resp.status == 401
