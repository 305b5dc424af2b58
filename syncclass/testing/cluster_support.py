"""Several mixer nodes on this machine for tests and benchmarks: a real Redis
(``scripts/redisserver.sh``), ``syncclass mixer --node-id`` processes on loopback ports,
agents and a recorder subscribed to every node (:mod:`syncclass.demo`'s processes).

With ``hosts`` (e.g. :class:`syncclass.netem.BridgedLan` hosts), the named processes run in
their own network namespaces at their own addresses instead: each gets a copy of the
county file that binds and offers only its address as ICE host candidate."""

from __future__ import annotations

import contextlib
import copy
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
import yaml

from syncclass.demo import LocalDeployment, Proc, free_port, http_json
from syncclass.netem import NamespaceLink

from .redis_support import RedisServer


def free_port_block(count: int) -> int:
    """A loopback TCP port free with the ``count - 1`` after it (a node's media workers
    publish the recording on its endpoint's port + worker index)."""
    while True:
        base = free_port()
        if base + count - 1 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base + 1, base + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


class ClusterDeployment:
    """Nodes ``n1``, ``n2``, ... of one county, Redis, agents and a recorder.

    ``county_data``: the county YAML as data (``tests.county.County.data``); its
    ``mixer.cluster`` section is written here. ``hosts``: process name (``redis``, ``n1``,
    ..., ``recorder``, a classroom id) -> the namespace it runs in; the others run here on
    loopback. This namespace must reach every host's address (as a bridge's does).
    ``workers``: ``mixer.workers`` of every node (0: lessons in the node process)."""

    def __init__(self, county_data: dict[str, Any], work_dir: Path, nodes: int = 2,
                 heartbeat_s: float = 0.5, lease_ttl_s: float = 2.0,
                 hosts: Mapping[str, NamespaceLink] | None = None, workers: int = 0) -> None:
        self.work_dir = work_dir
        self.hosts = dict(hosts or {})
        redis_host = self.hosts.get("redis")
        self.redis = RedisServer(free_port(), host=self.addr("redis"),
                                 wrap=redis_host.ns_command([]) if redis_host else None)
        try:
            self.redis.start()
        except BaseException:
            self.redis.close()
            raise
        self.ports = {f"n{i + 1}": free_port() for i in range(nodes)}
        self.endpoints = {n: f"tcp://{self.addr(n)}:{free_port_block(max(1, workers))}"
                          for n in self.ports}
        county_data["mixer"]["workers"] = workers
        county_data["mixer"]["cluster"] = {
            "redis_url": self.redis.url, "heartbeat_s": heartbeat_s, "lease_ttl_s": lease_ttl_s,
            "nodes": [{"id": n, "url": self.url(n), "recorder_endpoint": self.endpoints[n]}
                      for n in self.ports]}
        self.config_path = work_dir / "county.yaml"
        self.county_data = county_data
        self.config_path.write_text(yaml.safe_dump(county_data, allow_unicode=True),
                                    encoding="utf-8")
        self.dep = LocalDeployment(self.config_path, work_dir, port=self.ports["n1"])
        """Spawns and watches the processes (agents connect to ``dep.port``'s node)."""

    def addr(self, name: str) -> str:
        """The address process ``name`` listens at (its namespace's, else loopback)."""
        host = self.hosts.get(name)
        return host.ns_addr if host is not None else "127.0.0.1"

    def _config_for(self, name: str) -> Path:
        """The county file of process ``name``: the shared one, or in a namespace a copy
        binding and offering (ICE) only its address."""
        if name not in self.hosts:
            return self.config_path
        data = copy.deepcopy(self.county_data)
        data["mixer"]["host"] = self.addr(name)
        data["mixer"]["ice_host_addresses"] = [self.addr(name)]
        path = self.work_dir / f"county-{name}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    def _wrap(self, name: str) -> Callable[[list[str]], list[str]] | None:
        host = self.hosts.get(name)
        return host.ns_command if host is not None else None

    def url(self, node_id: str) -> str:
        return f"http://{self.addr(node_id)}:{self.ports[node_id]}"

    def start_node(self, node_id: str, timeout: float = 30.0) -> Proc:
        args = ["mixer", "--config", str(self._config_for(node_id)), "--port",
                str(self.ports[node_id]), "--node-id", node_id,
                "--data-dir", str(self.work_dir / f"mixer-{node_id}")]
        proc = self.dep._spawn(f"mixer-{node_id}", args, wrap=self._wrap(node_id))
        self.dep.wait_for(lambda: http_json(self.url(node_id) + "/healthz", timeout=1.0)[0]
                          == 200, timeout, f"node {node_id} /healthz", proc)
        return proc

    def node_stats(self, node_id: str) -> dict[str, Any]:
        """The node's ``/api/stats`` as the ops token reads it (with media workers:
        ``node.workers``, each with its pid)."""
        return dict(http_json(self.url(node_id) + "/api/stats", token=self.dep.ops_token,
                              timeout=2.0)[1])

    def kill_node(self, node_id: str) -> None:
        """``kill -9`` of the node and its media workers at once (the machine died): no
        goodbye, leases left to expire. (Killing the front alone, its workers would stop
        cleanly as their pipe closes, and release the lessons at once.)"""
        proc = self.dep.procs.get(f"mixer-{node_id}")
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.popen.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.send_signal(signal.SIGKILL)
        self.dep.stop(f"mixer-{node_id}", signal.SIGKILL)

    def start_recorder(self, out: Path) -> Proc:
        """A recorder subscribed to every node (no ``--recorder-endpoint``)."""
        args = ["recorder", "--config", str(self._config_for("recorder")),
                "--out", str(out / "lessons"), "--archive-dir", str(out / "archive"),
                "--spool-dir", str(out / "spool")]
        return self.dep._spawn("recorder", args, wrap=self._wrap("recorder"))

    def start_agent(self, classroom_id: str, node_id: str, out_dir: Path | None = None
                    ) -> Proc:
        """An agent whose entry node is ``node_id`` (it also knows the others)."""
        if classroom_id not in self.hosts:
            self.dep.port = self.ports[node_id]
            return self.dep.start_agent(classroom_id, out_dir=out_dir)
        control_port = free_port()
        args = ["agent", "--config", str(self._config_for(classroom_id)), "--classroom",
                classroom_id, "--mixer-url", self.url(node_id), "--control-port",
                str(control_port)]
        if out_dir is not None:
            args += ["--out", str(out_dir)]
        return self.dep._spawn(classroom_id, args, control_port, self._wrap(classroom_id))

    def _agent_call(self, classroom_id: str, fn: Callable[[], Any]) -> Any:
        """``fn`` run where the agent's control page (on its loopback) is reachable."""
        host = self.hosts.get(classroom_id)
        return fn() if host is None else host.call_in_ns(fn, timeout=15.0)

    def agent_status(self, classroom_id: str) -> dict[str, Any]:
        """The agent's ``/api/status`` (from inside its namespace if it has one)."""
        return dict(self._agent_call(classroom_id,
                                     lambda: self.dep.agent_status(classroom_id)))

    def agent_command(self, classroom_id: str, action: str) -> tuple[int, Any]:
        """POST ``/api/<action>`` to the agent's control page (``start``, ``end``)."""
        result: tuple[int, Any] = self._agent_call(
            classroom_id, lambda: self.dep.agent_command(classroom_id, action))
        return result

    def node_status(self, node_id: str) -> dict[str, Any]:
        return dict(http_json(self.url(node_id) + "/api/lessons",
                              token=self.dep.ops_token, timeout=2.0)[1])

    def node_of_agent(self, classroom_id: str) -> str | None:
        """The node the agent is connected to now (by its mixer URL)."""
        url = self.agent_status(classroom_id).get("mixer_url")
        for n in self.ports:
            if self.url(n) == url:
                return n
        return None

    def in_lesson_with_frames(self, classroom_id: str, lesson_id: str, node_id: str,
                              min_frames: int = 3) -> bool:
        """The agent is in ``lesson_id`` on ``node_id`` and receiving its view."""
        st = self.agent_status(classroom_id)
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
