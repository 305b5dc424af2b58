"""A real lesson (mixer + three agent processes) watched on the ops dashboard in headless
Chromium (Debian's /usr/bin/chromium, driven by playwright); /metrics scraped and parsed
during the lesson; a killed classroom raises a dropout alert delivered by a signed webhook.

The screenshot is kept as artifacts/dashboard-<time>.png (path printed).
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncclass.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook
from syncclass.demo import LocalDeployment, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
MAIN, RURAL = "main-3-1", ["hetou-3", "shanping-3"]
MEMBERS = [MAIN, *RURAL]
USER, PASSWORD = "ops", "syncclass-demo"  # the demo user of the sample county
WEBHOOK_SECRET = "dashboard-test-webhook-secret"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Hooks:
    """A webhook receiver on loopback that checks every signature."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad = 0
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if verify_webhook(WEBHOOK_SECRET.encode(), body,
                                  self.headers.get(TIMESTAMP_HEADER),
                                  self.headers.get(SIGNATURE_HEADER), time.time()):
                    hooks.received.append(json.loads(body))
                    self.send_response(204)
                else:
                    hooks.bad += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_config(tmp: Path, webhook_url: str) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["ops"].update({
        "alert_hold_s": 2.0,
        "webhooks": [{"url": webhook_url, "secret": WEBHOOK_SECRET,
                      "events": ["alert", "lesson_started"]}],
    })
    path = tmp / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


class Lesson:
    def __init__(self, dep: LocalDeployment, hooks: Hooks) -> None:
        self.dep = dep
        self.hooks = hooks


@pytest.fixture(scope="module")
def lesson(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lesson]:
    tmp = tmp_path_factory.mktemp("dashboard")
    hooks = Hooks()
    dep = LocalDeployment(make_config(tmp, hooks.url), tmp)
    try:
        dep.start_mixer()
        dep.start_recorder()
        for cid in MEMBERS:
            dep.start_agent(cid)
        dep.wait_for(lambda: set(MEMBERS) <= set(dep.mixer_status()["classrooms"]), 30,
                     "agents connected")
        status, body = dep.agent_command(MAIN, "start")
        assert status == 200, body
        dep.wait_for(lambda: all(
            (dep.agent_status(c)["reception"] or {}).get("frames_received", 0) > 0
            for c in MEMBERS), 30, "media flowing")
        yield Lesson(dep, hooks)
    except BaseException:
        for proc in list(dep.procs.values()):
            print(f"--- {proc.name} log ---\n{dep.tail(proc, 60)}")
        raise
    finally:
        dep.stop_all()
        hooks.close()


def numbers(page: Any) -> dict[str, dict[str, str]]:
    """Every classroom card's displayed fields, as text."""
    return dict(page.evaluate("""() => {
        const out = {};
        for (const card of document.querySelectorAll('.card[data-classroom]')) {
            const f = {level: card.dataset.level};
            for (const s of card.querySelectorAll('[data-field]'))
                f[s.dataset.field] = s.textContent;
            out[card.dataset.classroom] = f;
        }
        return out;
    }"""))


def test_dashboard_in_chromium(lesson: Lesson) -> None:
    from playwright.sync_api import sync_playwright

    url = lesson.dep.mixer_url
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1300},
            bypass_csp=True)  # lets the test's own probes run; the page needs no exception
        try:
            page = ctx.new_page()
            page.goto(url + "/dashboard")
            assert page.url.endswith("/dashboard/login")  # no session: the login page
            page.fill("#user", USER)
            page.fill("#password", "not-the-password")
            page.click("#login-button")
            assert "Wrong user name or password" in page.inner_text("#login-error")
            page.fill("#user", USER)
            page.fill("#password", PASSWORD)
            page.click("#login-button")
            page.wait_for_url(url + "/dashboard")
            page.wait_for_function(
                "document.querySelectorAll('.card[data-classroom]').length === 3"
                " && Number(document.body.dataset.samples || 0) >= 3", timeout=20_000)
            first = numbers(page)
            elapsed1 = page.inner_text("#lessons tbody .elapsed")
            samples1 = int(page.evaluate("document.body.dataset.samples"))
            page.wait_for_function(
                f"Number(document.body.dataset.samples) >= {samples1 + 3}", timeout=20_000)
            second = numbers(page)
            elapsed2 = page.inner_text("#lessons tbody .elapsed")
            assert set(first) == set(second) == set(MEMBERS)
            for cid in MEMBERS:
                a, b = first[cid], second[cid]
                assert int(b["frames_in"]) > int(a["frames_in"]), (cid, a, b)
                # Measured values, not their size: the machine is shared and may be loaded
                # (a 1 s sample can see no frame then); what flows is frames_in above.
                for f in ("fps_in", "fps_out", "bitrate_in_kbps", "bitrate_out_kbps",
                          "latency_ms", "rtt_ms", "jitter_ms", "loss_in_percent"):
                    assert float(b[f]) >= 0, (cid, f, b)
                assert float(b["latency_ms"]) > 0, (cid, b)
                changed = {f for f in a if a[f] != b[f]} - {"frames_in", "level"}
                assert changed, (cid, a, b)
                assert b["audio_level_dbov"] != "–", (cid, b)
                assert b["level"] in ("ok", "amber", "red"), (cid, b)
            assert elapsed2 != elapsed1  # the lesson clock runs
            assert "数学" in page.inner_text("#lessons")
            # The recorder's state: the lesson is being recorded by the one recorder.
            assert page.inner_text("#mixer-recorder").startswith("recording · 1 connected")
            # The charts have drawn something: non-blank canvas pixels.
            inked = page.evaluate("""() => {
                const c = document.querySelector('.card [data-chart="fps"]');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                return n; }""")
            assert inked > 50
            artifacts = ROOT / "artifacts"
            artifacts.mkdir(exist_ok=True)
            shot = artifacts / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            page.click("#logout")
            page.wait_for_url(url + "/dashboard/login")
            status = page.evaluate(
                "fetch('/dashboard/api/snapshot').then(r => r.status)")
            assert status == 401
        finally:
            ctx.close()


def scrape(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_during_lesson(lesson: Lesson) -> None:
    url = lesson.dep.mixer_url

    def complete() -> bool:
        # Agents report latency every 2 s: wait until every classroom has reported once.
        fams = scrape(url)
        lat = fams["syncclass_classroom_glass_to_glass_latency_seconds"].samples
        return {s.labels["classroom"] for s in lat} == set(MEMBERS)

    lesson.dep.wait_for(complete, 20, "every classroom's latency in /metrics", interval=0.5)
    fams = scrape(url)
    up = {s.labels["classroom"]: s for s in fams["syncclass_classroom_up"].samples}
    assert set(up) == set(MEMBERS)
    lesson_ids = {s.labels["lesson"] for s in up.values()}
    assert len(lesson_ids) == 1 and "" not in lesson_ids
    assert all(s.value == 1 and s.labels["state"] == "in_lesson" for s in up.values())
    fps = [(s.labels["classroom"], s.labels["direction"], s.value)
           for s in fams["syncclass_classroom_frames_per_second"].samples]
    assert {c for c, d, v in fps if d == "in" and v >= 0} == set(MEMBERS)
    frames = {s.labels["classroom"]: s.value
              for s in fams["syncclass_classroom_frames_in"].samples if s.name.endswith("_total")}
    assert set(frames) == set(MEMBERS) and all(v > 0 for v in frames.values()), frames
    bitrate = {(s.labels["classroom"], s.labels["direction"]): s.value
               for s in fams["syncclass_classroom_bitrate_bits_per_second"].samples}
    for cid in MEMBERS:
        assert bitrate[(cid, "in")] >= 0 and bitrate[(cid, "out")] >= 0
    lat = {s.labels["classroom"]: s.value
           for s in fams["syncclass_classroom_glass_to_glass_latency_seconds"].samples}
    assert set(lat) == set(MEMBERS) and all(v > 0 for v in lat.values())


def test_dropout_alert_webhook(lesson: Lesson) -> None:
    dep, hooks = lesson.dep, lesson.hooks
    started = [h for h in hooks.received if h["event"] == "lesson_started"]
    assert len(started) == 1 and started[0]["data"]["lesson"]["subject"] == "数学"
    victim = "shanping-3"
    proc = dep.procs.pop(victim).popen
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    def fired() -> bool:
        return any(h["event"] == "alert" and h["classroom_id"] == victim
                   and h["data"]["kind"] == "dropout" and h["data"]["state"] == "firing"
                   for h in hooks.received)

    dep.wait_for(fired, 30, "dropout alert webhook")
    alert = next(h for h in hooks.received if h["event"] == "alert"
                 and h["classroom_id"] == victim and h["data"].get("kind") == "dropout")
    assert alert["lesson_id"] and alert["data"]["held_s"] >= 2.0
    assert hooks.bad == 0
    # The mixer's log has the alert line too.
    log = (dep.work_dir / "logs" / "mixer.log").read_text(encoding="utf-8")
    assert f"ALERT classroom {victim}: dropout firing" in log
