"""The benchmark harness: where results go and the environment each one was measured in.

Every benchmark writes its JSON through :func:`write_result`, which adds a ``run`` record:
the command line and :func:`environment` (CPU model and cores, load, Python / aiortc / PyAV /
numpy / FFmpeg versions, git commit, UTC time) at the moment of writing. Benchmarks that
run for minutes also keep :func:`environment` from their start. Percentiles and medians:
:mod:`syncclass.stats` (one definition for benchmarks, tests and the code).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "ROOT", "environment", "write_result"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """HEAD of the checkout, with ``-dirty`` when tracked files have changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty.strip() else "")


def _ffmpeg() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return "(not installed)"
    return out.splitlines()[0] if out else ""


def environment() -> dict[str, Any]:
    """Where and when: CPU model and count, 1/5/15-minute load averages, versions, git
    commit, UTC timestamp."""
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "aiortc": _version("aiortc"),
        "av": _version("av"),
        "numpy": _version("numpy"),
        "machine": platform.machine(),
        "ffmpeg": _ffmpeg(),
        "git_commit": _git_commit(),
    }


def write_result(path: Path | str, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` with a ``run`` record (command line and
    :func:`environment` now)."""
    path = Path(path)
    record = {**result, "run": {"argv": sys.orig_argv,
                                "environment": environment()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
