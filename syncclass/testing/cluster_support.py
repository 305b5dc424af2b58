"""Several mixer nodes on this machine for tests and benchmarks: a real Redis
(``scripts/redisserver.sh``), ``syncclass mixer --node-id`` processes on loopback ports,
agents and a recorder subscribed to every node (:mod:`syncclass.demo`'s processes)."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from syncclass.demo import LocalDeployment, Proc, free_port, http_json

from .redis_support import RedisServer


class ClusterDeployment:
    """Nodes ``n1``, ``n2``, ... of one county, Redis, agents and a recorder.

    ``county_data``: the county YAML as data (``tests.county.County.data``); its
    ``mixer.cluster`` section is written here."""

    def __init__(self, county_data: dict[str, Any], work_dir: Path, nodes: int = 2,
                 heartbeat_s: float = 0.5, lease_ttl_s: float = 2.0) -> None:
        self.work_dir = work_dir
        self.redis = RedisServer(free_port()).start()
        self.ports = {f"n{i + 1}": free_port() for i in range(nodes)}
        self.endpoints = {n: f"tcp://127.0.0.1:{free_port()}" for n in self.ports}
        county_data["mixer"]["cluster"] = {
            "redis_url": self.redis.url, "heartbeat_s": heartbeat_s, "lease_ttl_s": lease_ttl_s,
            "nodes": [{"id": n, "url": self.url(n), "recorder_endpoint": self.endpoints[n]}
                      for n in self.ports]}
        self.config_path = work_dir / "county.yaml"
        self.config_path.write_text(yaml.safe_dump(county_data, allow_unicode=True),
                                    encoding="utf-8")
        self.dep = LocalDeployment(self.config_path, work_dir, port=self.ports["n1"])
        """Spawns and watches the processes (agents connect to ``dep.port``'s node)."""

    def url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.ports[node_id]}"

    def start_node(self, node_id: str, timeout: float = 30.0) -> Proc:
        args = ["mixer", "--config", str(self.config_path), "--port",
                str(self.ports[node_id]), "--node-id", node_id,
                "--data-dir", str(self.work_dir / f"mixer-{node_id}")]
        proc = self.dep._spawn(f"mixer-{node_id}", args)
        self.dep.wait_for(lambda: http_json(self.url(node_id) + "/healthz", timeout=1.0)[0]
                          == 200, timeout, f"node {node_id} /healthz", proc)
        return proc

    def kill_node(self, node_id: str) -> None:
        """``kill -9``: no goodbye, leases left to expire."""
        self.dep.stop(f"mixer-{node_id}", signal.SIGKILL)

    def start_recorder(self, out: Path) -> Proc:
        """A recorder subscribed to every node (no ``--recorder-endpoint``)."""
        args = ["recorder", "--config", str(self.config_path), "--out", str(out / "lessons"),
                "--archive-dir", str(out / "archive"), "--spool-dir", str(out / "spool")]
        return self.dep._spawn("recorder", args)

    def start_agent(self, classroom_id: str, node_id: str, out_dir: Path | None = None
                    ) -> Proc:
        """An agent whose entry node is ``node_id`` (it also knows the others)."""
        self.dep.port = self.ports[node_id]
        return self.dep.start_agent(classroom_id, out_dir=out_dir)

    def node_status(self, node_id: str) -> dict[str, Any]:
        return dict(http_json(self.url(node_id) + "/api/lessons",
                              token=self.dep.ops_token, timeout=2.0)[1])

    def node_of_agent(self, classroom_id: str) -> str | None:
        """The node the agent is connected to now (by its mixer URL)."""
        url = self.dep.agent_status(classroom_id).get("mixer_url")
        for n in self.ports:
            if self.url(n) == url:
                return n
        return None

    def in_lesson_with_frames(self, classroom_id: str, lesson_id: str, node_id: str,
                              min_frames: int = 3) -> bool:
        """The agent is in ``lesson_id`` on ``node_id`` and receiving its view."""
        st = self.dep.agent_status(classroom_id)
        rx = st.get("reception") or {}
        return (st.get("mixer_url") == self.url(node_id) and st.get("peer") == "connected"
                and (st.get("lesson") or {}).get("lesson_id") == lesson_id
                and int(rx.get("frames_received", 0)) >= min_frames)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str,
                 interval: float = 0.1) -> float:
        """Seconds until ``predicate`` held (TimeoutError after ``timeout``)."""
        t0 = time.monotonic()
        self.dep.wait_for(predicate, timeout, what, interval=interval)
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dep.stop_all()
        for name in list(self.dep.procs):
            self.dep.stop(name)
        self.redis.close()
