"""The agent's local control page in headless Chromium, against a real mixer and three
real agent processes: the teacher clicks 开始上课 Start lesson → the lesson starts and the
receiving classrooms join by themselves; camera preview, mic mute, hand raise, device
choice (kept across restarts), End lesson; cross-site requests are refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from syncclass.demo import LocalDeployment
from syncclass.testing.browser import chromium
from tests.county import County

pytestmark = pytest.mark.integration

MAIN, RURAL = "main-3-1", ["hetou-3", "shanping-3"]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    tmp = tmp_path_factory.mktemp("control")
    county = County(tmp)
    county.data["media"].update(width=640, height=360)  # keep the machine's 2 cores for the rest
    config = county.synthetic_cameras(width=640, height=360).write()
    state = tmp / "state"
    mp = pytest.MonkeyPatch()
    mp.setenv("SYNCCLASS_STATE_DIR", str(state))  # the agents keep device choices here
    d = LocalDeployment(config, tmp)
    try:
        d.start_mixer()
        for cid in [MAIN, *RURAL]:
            d.start_agent(cid)
        d.wait_for(lambda: {MAIN, *RURAL} <= set(d.mixer_status()["classrooms"]), 30,
                   "agents connected")
        yield d
    except BaseException:
        d.write_logs(40)
        raise
    finally:
        d.stop_all()
        mp.undo()


def page_url(dep: LocalDeployment, cid: str) -> str:
    return f"http://127.0.0.1:{dep.procs[cid].control_port}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_start_lesson_button_starts_the_lesson_and_rural_classrooms_join(
    dep: LocalDeployment, browser: Any, tmp_path: Path
) -> None:
    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    expect(page.locator("#name")).to_have_text("实验小学 三(1)班")
    expect(page.locator("#conn")).to_contain_text("已连接")
    start = page.locator("#start")
    expect(start).to_be_visible()
    expect(start).to_contain_text("开始上课")
    expect(start).to_contain_text("Start lesson")
    expect(page.locator("#hand-controls")).to_be_hidden()  # the main classroom has no hand
    expect(start).to_be_enabled()
    for cid in RURAL:
        assert not dep.agent_status(cid)["in_lesson"]

    start.click()

    expect(page.locator("#lesson")).to_contain_text("上课中", timeout=15_000)
    expect(page.locator("#message")).to_have_text("✓")
    dep.wait_for(lambda: all(dep.agent_status(c)["in_lesson"] and
                             (dep.agent_status(c)["reception"] or {}).get("frames_received", 0)
                             > 0 for c in RURAL), 40, "receiving classrooms joined")
    lesson = dep.mixer_status()
    assert {MAIN, *RURAL} <= set(lesson["classrooms"])
    expect(page.locator("#end")).to_be_enabled()
    expect(start).to_be_disabled()  # greyed: a second press cannot start another lesson
    assert page.evaluate("getComputedStyle(document.getElementById('start'))"
                         ".backgroundColor") == "rgb(170, 170, 187)"
    page.screenshot(path=str(tmp_path / "control-live.png"), full_page=True)
    page.close()


def test_camera_preview_and_mic_mute(dep: LocalDeployment, browser: Any) -> None:
    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    # The preview is the synthetic camera (its picture is not black).
    page.wait_for_function("document.getElementById('preview').naturalWidth === 480",
                           timeout=15_000)
    lum = page.evaluate("""() => {
        const img = document.getElementById('preview');
        const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0;
        for (let i = 0; i < d.length; i += 4) s += d[i + 1];
        return s / (d.length / 4); }""")
    assert lum > 40, lum
    mute = page.locator("#mute")
    expect(mute).to_contain_text("麦克风静音")
    mute.click()
    expect(mute).to_contain_text("已静音", timeout=5000)
    assert dep.agent_status(MAIN)["local"]["mic_muted"] is True
    mute.click()
    expect(mute).to_contain_text("麦克风静音", timeout=5000)
    assert dep.agent_status(MAIN)["local"]["mic_muted"] is False
    page.close()


def test_receiving_classroom_raises_its_hand(dep: LocalDeployment, browser: Any) -> None:
    page: Page = browser.new_page()
    page.goto(page_url(dep, RURAL[0]))
    expect(page.locator("#controls")).to_be_hidden()  # no Start/End in a rural classroom
    hand = page.locator("#hand")
    expect(hand).to_be_enabled(timeout=10_000)
    hand.click()
    expect(page.locator("#message")).to_have_text("✓")
    assert dep.agent_status(RURAL[0])["hands_raised"] == 1
    page.close()


def test_directing_buttons_feature_a_classroom(dep: LocalDeployment, browser: Any) -> None:
    """The teacher's 导播 buttons (issue 21): a receiving classroom chosen by hand becomes
    the large picture of the students' view; 自动 gives directing back."""
    def largest(cid: str) -> str | None:
        layout = dep.agent_status(cid)["layout"] or {}
        places = layout.get("placements") or []
        return max(places, key=lambda p: p["w"] * p["h"])["classroom_id"] if places else None

    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    expect(page.locator("#directing")).to_be_visible(timeout=10_000)
    page.locator(f'button.direct[data-source="{RURAL[0]}"]').click()
    expect(page.locator("#message")).to_have_text("✓")
    expect(page.locator("#direct-now")).to_have_text(RURAL[0])
    dep.wait_for(lambda: largest(RURAL[1]) == RURAL[0], 10, "classroom featured by hand")
    page.locator('button.direct[data-source="auto"]').click()
    expect(page.locator("#direct-now")).to_contain_text("自动")
    # Every microphone plays a tone (speech to a voice detector), the teacher's too: the
    # teacher comes first, so automatic directing features the teacher again.
    dep.wait_for(lambda: largest(RURAL[1]) == MAIN, 10, "teacher featured again")
    page.close()


def test_share_courseware_button(dep: LocalDeployment, browser: Any) -> None:
    """共享课件 (issue 21): the main classroom's slides become the large picture of the
    students' view, with the teacher picture-in-picture; pressed again, the teacher."""
    def placements(cid: str) -> list[dict[str, Any]]:
        return list((dep.agent_status(cid)["layout"] or {}).get("placements") or [])

    def largest(cid: str) -> str | None:
        places = placements(cid)
        return max(places, key=lambda p: p["w"] * p["h"])["classroom_id"] if places else None

    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    button = page.locator("#courseware")
    expect(button).to_contain_text("共享课件", timeout=10_000)
    button.click()
    expect(button).to_contain_text("停止共享", timeout=5000)
    assert dep.agent_status(MAIN)["courseware"]["shared"] is True
    dep.wait_for(lambda: largest(RURAL[0]) == "@courseware", 15, "courseware shown large")
    assert MAIN in {p["classroom_id"] for p in placements(RURAL[0])}  # picture-in-picture
    button.click()
    expect(button).to_contain_text("共享课件", timeout=5000)
    dep.wait_for(lambda: largest(RURAL[0]) == MAIN, 15, "teacher large again")
    assert dep.agent_status(MAIN)["courseware"]["frames_sent"] > 0
    page.close()


def test_device_choice_applies_and_a_bad_one_changes_nothing(
    dep: LocalDeployment, browser: Any
) -> None:
    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    cam = page.locator("#sel-camera")
    expect(cam.locator("option")).not_to_have_count(0, timeout=10_000)
    cam.select_option(label="测试画面 test picture")
    page.locator("#apply-devices").click()
    expect(page.locator("#message")).to_contain_text("设备已切换", timeout=10_000)
    state = Path(dep.config_path).parent / "state" / f"devices-{MAIN}.json"
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["camera"]["kind"] == "synthetic"

    url = page_url(dep, MAIN) + "api/devices"
    status, body = post(url, {"camera": {"kind": "camera", "path": "/dev/video_syncclass_no"}})
    assert status == 409 and "nothing changed" in body["message"], body
    status, body = post(url, {"camera": {"kind": "camera", "path": "/dev/x", "width": 320}})
    assert status == 400 and "size" in body["message"], body
    status, body = post(url, {"projector": {}})
    assert status == 400, body
    assert json.loads(state.read_text(encoding="utf-8")) == saved
    s = dep.agent_status(MAIN)
    assert s["in_lesson"] and s["local"]["camera"]["kind"] == "synthetic"
    # The lesson goes on after the switch: the main classroom still sends pictures.
    before = dep.agent_status(RURAL[0])["reception"]["latency_ms"][MAIN]["timecode_advances"]
    dep.wait_for(lambda: dep.agent_status(RURAL[0])["reception"]["latency_ms"][MAIN][
        "timecode_advances"] > before + 10, 20, "main camera still arriving")
    page.close()


def test_requests_from_other_sites_are_refused(dep: LocalDeployment) -> None:
    base = page_url(dep, MAIN)
    status, body = post(base + "api/end", {}, {"Origin": "http://evil.example"})
    assert status == 403 and body["code"] == "cross_origin"
    status, body = post(base + "api/mute", {"muted": True}, {"Host": "evil.example"})
    assert status == 403 and body["code"] == "not_local"
    status, body = post(base + "api/mute", {"muted": "yes"})
    assert status == 400
    # JSON nested too deeply to parse (issue 18): a clear 400, not a 500.
    for path in ("api/mute", "api/devices"):
        req = urllib.request.Request(base + path, data=b"[" * 50_000 + b"]" * 50_000,
                                     method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        err.value.close()
        assert err.value.code == 400, path
    assert dep.agent_status(MAIN)["in_lesson"]


def test_end_lesson_button_ends_it_for_everyone(dep: LocalDeployment, browser: Any) -> None:
    page: Page = browser.new_page()
    page.goto(page_url(dep, MAIN))
    end = page.locator("#end")
    expect(end).to_contain_text("下课")
    expect(end).to_be_enabled(timeout=5000)
    end.click()
    expect(page.locator("#lesson")).to_contain_text("已下课", timeout=15_000)
    dep.wait_for(lambda: not any(dep.agent_status(c)["in_lesson"] for c in [MAIN, *RURAL]),
                 20, "classrooms left")
    page.close()
