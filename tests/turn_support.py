"""A real coturn for tests, started by the project's ``scripts/turnserver.sh``."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
