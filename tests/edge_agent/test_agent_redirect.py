"""Several mixer nodes: an agent follows a ``redirect`` only to a node its county config
lists, and tries every node in turn (entry URLs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent
from syncclass.config import load_config
from syncclass.protocol import Redirect
from tests.county import County


async def test_redirect_only_to_a_listed_node(county: County, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCCLASS_STATE_DIR", str(tmp_path / "state"))
    county.synthetic_cameras(width=320, height=180, fps=10)
    county.mixer["cluster"] = {"redis_url": "redis://127.0.0.1:1/0", "nodes": [
        {"id": "n1", "url": "http://127.0.0.1:8701"}, {"id": "n2", "url": "http://127.0.0.1:8702"}]}
    agent = Agent(load_config(county.write()), "hetou-3", mixer_url="http://127.0.0.1:8701")
    assert agent.entry_urls == ["http://127.0.0.1:8701", "http://127.0.0.1:8702"]
    await agent._redirected(Redirect(url="http://evil.example:8702", node_id="n2"))
    assert agent._redirect_url is None and agent.redirects == 0
    assert agent.errors[-1]["code"] == "bad_redirect"
    await agent._redirected(Redirect(url="http://127.0.0.1:8702/", node_id="n2"))
    assert agent._redirect_url == "http://127.0.0.1:8702" and agent.redirects == 1
