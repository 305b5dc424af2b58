"""A real PostgreSQL for benchmarks of several mixer nodes: Debian's postgresql started by
``scripts/pgserver.sh`` (a throwaway cluster, trust auth), optionally inside a network
namespace listening on its LAN address, so nodes on other hosts write reports to it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pgserver.sh"


class PostgresServer:
    """``scripts/pgserver.sh`` on ``host:port``; ``start()`` waits until it accepts a
    connection (from this namespace: ``host`` must be reachable from here)."""

    def __init__(self, port: int, host: str = "127.0.0.1",
                 wrap: list[str] | None = None) -> None:
        self.port = port
        self.host = host
        self.wrap = wrap or []
        """A command prefix (``ip netns exec NS``) to run it elsewhere."""
        self.data = Path(tempfile.mkdtemp(prefix="syncclass-pg-"))
        self.log = Path(f"{self.data}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``analytics.database_url`` of its ``postgres`` database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self, timeout_s: float = 90.0) -> PostgresServer:
        if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
            raise RuntimeError("PostgreSQL is not installed: run scripts/bootstrap.sh "
                               "(Debian package postgresql)")
        import psycopg

        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([*self.wrap, "bash", str(SCRIPT), str(self.data),
                                          str(self.port), self.host],
                                         stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgserver.sh exited {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.3)

    def close(self) -> None:
        """Stop it (SIGTERM: a clean shutdown) and delete its cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.data, ignore_errors=True)
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
