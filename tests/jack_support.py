"""A private JACK server with the dummy backend: a real-time-paced sound device for
PortAudio/sounddevice on a machine without a sound card."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def jack_server(rate_hz: int = 48000, period: int = 960) -> Iterator[str]:
    """Run ``jackd -d dummy`` (``period`` samples per cycle, paced by the system clock) under
    a unique server name; yields the name (set ``JACK_DEFAULT_SERVER`` to it)."""
    if shutil.which("jackd") is None:
        raise RuntimeError("jackd is not installed (scripts/bootstrap.sh installs jackd2)")
    name = f"syncclass-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r",
                                 str(rate_hz), "-p", str(period)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["jack_lsp"], capture_output=True, timeout=10,
                                 env={**env, "JACK_DEFAULT_SERVER": name}).returncode:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"jackd did not start: {log.read().decode()[-500:]}")
                time.sleep(0.1)
            yield name
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
