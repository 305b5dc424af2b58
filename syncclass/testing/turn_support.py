"""A real coturn for tests, started by the project's ``scripts/turnserver.sh``, and a
deployment whose receiving classroom sits behind a school NAT
(``tests/integration/test_turn_nat.py``, ``benchmarks/turn_join.py``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from syncclass.demo import LocalDeployment, http_json, write_link_configs
from syncclass.netem import FirewallPolicy, NattedSchool

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-turn-secret-0123456789"


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Coturn:
    """coturn on ``host`` (UDP+TCP :attr:`port`, TLS :attr:`tls_port`, a self-signed
    certificate for ``host`` at :attr:`ca_file`), relaying from ``host``."""

    def __init__(self, data: Path, host: str = "127.0.0.1", *,
                 allow_loopback_peers: bool = False) -> None:
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host=host)
        self.tls_port = free_port(host=host)
        self.log = data / "turnserver.log"
        env = {**os.environ, "TURN_SECRET": SECRET, "TURN_LISTEN_IP": host,
               "TURN_PORT": str(self.port), "TURN_TLS_PORT": str(self.tls_port),
               "TURN_MIN_PORT": "61000", "TURN_MAX_PORT": "61999",
               # Peers on loopback are refused by default (a relay must not reach the TURN
               # host's own services); tests whose peers live there allow them.
               "TURN_EXTRA": "allow-loopback-peers" if allow_loopback_peers else ""}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(ROOT / "scripts" / "turnserver.sh"), str(data)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.tail()}")
            try:
                with socket.create_connection((host, self.tls_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise TimeoutError(f"turnserver did not listen: {self.tail()}")

    @property
    def ca_file(self) -> str:
        return str(self.data / "turn-cert.pem")

    def urls(self) -> list[str]:
        """UDP, TCP, then TLS: the order of preference a county would configure."""
        return [f"turn:{self.host}:{self.port}?transport=udp",
                f"turn:{self.host}:{self.port}?transport=tcp",
                f"turns:{self.host}:{self.tls_port}?transport=tcp"]

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


MAIN, RURAL = "main-3-1", "hetou-3"


class Net:
    """A deployment whose receiving classroom hetou-3 sits behind a school NAT (its agent
    in the school's namespace), with coturn on the mixer's side of the NAT."""

    def __init__(self, dep: LocalDeployment, school: NattedSchool, coturn: Coturn) -> None:
        self.dep, self.school, self.coturn = dep, school, coturn
        self.rural_port = 0

    def rural_status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.rural_port}/api/status"
        return dict(self.school.call_in_ns(lambda: http_json(url, timeout=2.0)[1]))

    def peer(self, cid: str) -> str | None:
        room = self.dep.mixer_status()["classrooms"].get(cid)
        return None if room is None else room["peer"]


def write_turn_configs(tmp: Path, school: NattedSchool, coturn: Coturn) -> tuple[Path, Path]:
    """The sample county with small pictures and ``mixer.turn`` pointing at ``coturn``."""
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    # Small pictures: the network is the point here, and the machine is shared.
    data["media"].update(width=640, height=360, bitrate_kbps=800, uplink_bitrate_kbps=500)
    for room in data["classrooms"]:
        room.setdefault("devices", {})["camera"] = {"kind": "synthetic", "width": 320,
                                                    "height": 180, "fps": 15}
    data["analytics"] = {"enabled": False}
    data["mixer"]["turn"] = {"urls": coturn.urls(), "secret": SECRET,
                             "credential_lifetime_s": 3 * 3600, "ca_file": coturn.ca_file}
    return write_link_configs(data, school, tmp)


@contextmanager
def turn_nat_deployment(tmp: Path) -> Iterator[Net]:
    """School NAT + coturn + mixer + main agent (here) + hetou-3's agent (in the school);
    everything stopped and removed on exit. Needs root."""
    with NattedSchool("tn") as school:
        coturn = Coturn(tmp / "coturn", host=school.host_addr)
        dep: LocalDeployment | None = None
        try:
            main_cfg, ns_cfg = write_turn_configs(tmp, school, coturn)
            dep = LocalDeployment(main_cfg, tmp)
            dep.start_mixer()
            dep.start_agent(MAIN, out_dir=tmp / "classrooms")
            n = Net(dep, school, coturn)
            n.rural_port = dep.start_agent_behind(school, RURAL, ns_cfg,
                                                  tmp / "classrooms").control_port or 0
            dep.wait_for(lambda: {MAIN, RURAL} <= set(dep.mixer_status()["classrooms"]), 30,
                         "agents connected")
            yield n
        except BaseException:
            if dep is not None:
                dep.write_logs(40)
            sys.stderr.write(f"--- coturn log ---\n{coturn.tail()}\n")
            raise
        finally:
            if dep is not None:
                dep.stop_all()
            coturn.close()


def hold_lesson(net: Net, policy: FirewallPolicy, lesson_s: float) -> dict[str, Any]:
    """Set the school's firewall, start a lesson, hold it ``lesson_s`` s after hetou-3's
    first frame, end it; what both classrooms received and how long joining took."""
    ports = (net.dep.port, net.coturn.tls_port) if policy == "tcp_only_ports" else ()
    net.school.set_firewall(policy, ports)
    try:
        t0 = time.monotonic()
        status, lesson = net.dep.agent_command(MAIN, "start")
        if status != 200:
            raise RuntimeError(f"start: {status} {lesson}")
        net.dep.wait_for(lambda: net.peer(RURAL) == "connected"
                         and net.peer(MAIN) == "connected", 30, f"{policy}: both joined",
                         interval=0.1)
        join_s = time.monotonic() - t0
        net.dep.wait_for(lambda: (net.rural_status()["reception"] or {})
                         .get("frames_received", 0) > 0, 15, f"{policy}: first frame",
                         interval=0.1)
        first_frame_s = time.monotonic() - t0
        time.sleep(lesson_s)
        rural = net.rural_status()
        main = net.dep.agent_status(MAIN)
        status, body = net.dep.agent_command(MAIN, "end")
        if status != 200:
            raise RuntimeError(f"end: {status} {body}")
    finally:
        net.school.set_firewall("open")
    rx, back = rural["reception"], main["reception"]
    return {
        "firewall": policy, "turn_url": rural["ice"]["turn"], "pair": rural["ice"]["pair"],
        "join_s": round(join_s, 2), "first_frame_s": round(first_frame_s, 2),
        "rural_fps": rx["fps"], "rural_frames": rx["frames_received"],
        "rural_freezes": rx["freezes"], "rural_audio_frames": rx["audio_frames_received"],
        "rural_max_audio_gap_ms": rx["max_audio_gap_ms"],
        "main_fps": back["fps"],
        "main_sees_rural_timecode_advances":
            back["latency_ms"].get(RURAL, {}).get("timecode_advances"),
        "rural_reception": rx, "main_reception": back,
    }
