"""/metrics, /healthz and /readyz of an in-process mixer with a live lesson (no agents:
every classroom is offline, which the metrics must say with lesson and classroom labels)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mixer.app import create_app
from syncclass.config import CountyConfig, default_config_path, parse_config

METRICS_TOKEN = "metrics-token-0123456789"


def ops_config(**ops: Any) -> CountyConfig:
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    data["media"].update({"width": 320, "height": 180, "fps": 10})  # light on 2 cores
    data["ops"].update({"sample_interval_s": 0.2, **ops})
    return parse_config(data, "test")


class Mixer:
    def __init__(self, app: web.Application, runner: web.AppRunner, url: str) -> None:
        self.app, self.runner, self.url = app, runner, url


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    app = create_app(ops_config(metrics_token=METRICS_TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Mixer(app, runner, f"http://127.0.0.1:{port}")
    await runner.cleanup()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/metrics",
                        headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return families(await resp.text())


async def test_metrics_parse_with_lesson_and_classroom_labels(mixer: Mixer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(mixer.url + "/metrics") as resp:
            assert resp.status == 401  # the token is configured
        async with http.post(mixer.url + "/api/lessons/start",
                             json={"classroom_id": "main-3-1"},
                             headers={"Authorization": "Bearer demo-main-3-1-7c0f4e9a2b"}) as r:
            assert r.status == 200
            lesson_id = (await r.json())["lesson_id"]
        await asyncio.sleep(1.2)  # several samples with the lesson composing
        fams = await scrape(http, mixer.url)

    lessons = {s.labels["state"]: s.value for s in fams["syncclass_lessons"].samples}
    assert lessons["live"] == 1
    up = fams["syncclass_classroom_up"].samples
    assert {s.labels["classroom"] for s in up} == {"main-3-1", "hetou-3", "shanping-3"}
    for s in up:
        assert s.labels["lesson"] == lesson_id
        assert s.labels["state"] == "offline" and s.value == 0
    views = {s.labels["view"]: s.value for s in fams["syncclass_view_frames_per_second"].samples}
    assert set(views) == {"students_view", "teacher_view"}
    assert all(v > 3 for v in views.values()), views  # 10 fps configured, composing alone
    enc = {s.labels["view"]: s.value for s in fams["syncclass_view_encode_seconds"].samples}
    assert all(0 < v < 1 for v in enc.values()), enc
    assert fams["syncclass_mixer_cpu_percent"].samples[0].value >= 0
    # Offline members of a live lesson are alerts in the making, with a hold time.
    assert fams["syncclass_alerts_raised"].samples[0].value == 0
    elapsed = fams["syncclass_lesson_elapsed_seconds"].samples[0]
    assert elapsed.labels["lesson"] == lesson_id and elapsed.value > 0.5


async def test_healthz_and_readyz(mixer: Mixer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(mixer.url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(mixer.url + "/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["ready"] is True and body["samples"] >= 1
    from mixer.dashboard import OPS_KEY

    mixer.app[OPS_KEY].begin_shutdown()
    async with aiohttp.ClientSession() as http, http.get(mixer.url + "/readyz") as resp:
        assert resp.status == 503
