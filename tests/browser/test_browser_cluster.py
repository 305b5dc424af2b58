"""A browser classroom on several nodes (issue 20), in Debian's Chromium.

Two ``syncclass mixer --node-id`` processes and a real Redis on loopback; the main
classroom is an edge agent on n1 and starts the lesson there. hetou-3 opens ``/join`` on
n2 and types its credential into the form:

- n2 redirects it: the page goes to n1 with its credential (before, it arrived at n1's
  login form, the typed credential lost) and decodes the lesson's view there;
- ``kill -9`` of n1: the page's reconnects to n1 fail, it goes to n2 by itself (the
  welcome lists the nodes; before, it retried only n1, for ever), and n2, which resumed
  the lesson, serves it: the same lesson, decoded again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from syncclass.testing.browser import CHROMIUM, chromium, wait_page
from syncclass.testing.cluster_support import ClusterDeployment
from tests.cluster import light_cluster
from tests.county import County

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (bootstrap.sh)"),
]

MAIN, BROWSER = "main-3-1", "hetou-3"


@pytest.fixture
def cluster(tmp_path: Path, county: County) -> Iterator[ClusterDeployment]:
    yield from light_cluster(county, tmp_path, recorder=False)


def _decoding_on(page: Page, origin: str, lesson_id: str, since_frames: int = 0) -> str:
    """JS: the page is on ``origin``, in ``lesson_id``, connected and has decoded frames
    beyond ``since_frames``."""
    # Optional chaining: right after a navigation the page's module has not run yet, and
    # an expression that throws ends the wait at once.
    return (f"() => location.origin === {origin!r} && !!window.syncclass?.me"
            f" && window.syncclass.pc?.connectionState === 'connected'"
            f" && !!document.getElementById('status')?.textContent.includes({lesson_id!r})"
            f" && window.syncclass.state.framesReceived > {since_frames}")


@pytest.mark.timeout(150)
def test_a_browser_follows_its_lesson_across_nodes(cluster: ClusterDeployment) -> None:
    cluster.start_node("n1")
    cluster.start_node("n2")
    cluster.start_agent(MAIN, "n1")
    cluster.dep.wait_for(lambda: cluster.dep.agent_status(MAIN)["state"] == "connected", 30,
                         "main connected")
    status, lesson = cluster.dep.agent_command(MAIN, "start")
    assert status == 200, lesson
    lesson_id = lesson["lesson_id"]
    token = next(c["token"] for c in cluster.county_data["classrooms"] if c["id"] == BROWSER)
    n1, n2 = cluster.url("n1"), cluster.url("n2")
    with chromium(extra_args=["--allow-loopback-in-peer-connection"]) as browser:
        page = browser.new_page()
        page.goto(n2 + "/join")
        page.fill("#classroom", BROWSER)
        page.fill("#token", token)
        page.click("#login button[type=submit]")
        wait_page(page, _decoding_on(page, n1, lesson_id), 30,
                  "the page redirected to n1 and decoding the lesson there")
        rooms = cluster.node_status("n1")
        assert any(lesson_id == x.get("lesson_id") for x in rooms.get("lessons", [])), rooms
        cluster.kill_node("n1")
        wait_page(page, _decoding_on(page, n2, lesson_id), 40,
                  "the page moved to n2 by itself and decoding the same lesson")
        lessons = cluster.node_status("n2").get("lessons", [])
        live = [x for x in lessons if x.get("state") == "live"]
        assert [x["lesson_id"] for x in live] == [lesson_id], lessons
