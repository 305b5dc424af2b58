"""A real Redis for tests and benchmarks of several mixer nodes: Debian's redis-server
started by ``scripts/redisserver.sh`` (no persistence), stopped and started again at will
(the "Redis down" cases)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "redisserver.sh"


class RedisServer:
    """``scripts/redisserver.sh`` on ``host:port``; ``start()`` waits until it answers."""

    def __init__(self, port: int, host: str = "127.0.0.1",
                 wrap: list[str] | None = None) -> None:
        self.port = port
        self.host = host
        self.wrap = wrap or []
        """A command prefix (``ip netns exec NS``) to run it elsewhere."""
        self.data = Path(tempfile.mkdtemp(prefix="syncclass-redis-"))
        self.log = self.data / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run scripts/bootstrap.sh "
                               "(Debian package redis-server)")
        import redis

        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([*self.wrap, "bash", str(SCRIPT), str(self.data / "db"),
                                          str(self.port), self.host],
                                         stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1,
                             socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redisserver.sh exited {self.proc.returncode}: "
                                       f"{self.log.read_text(errors='replace')[-2000:]}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (its data goes: no persistence)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
