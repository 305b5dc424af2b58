"""The example county (``configs/county.yaml``) as a starting point for a test's config.

Tests edit :attr:`County.data` (the YAML as plain data) and then either parse it in
process (:meth:`County.config`) or write it for real processes (:meth:`County.write`).
The ``county`` fixture (tests/conftest.py) gives one per test; module-scoped fixtures
build one on their own temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from syncclass.config import CountyConfig, parse_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "configs" / "county.yaml"
"""The example deployment (the same county as syncclass/default_county.yaml)."""


class County:
    """The example county as editable data, for one test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        """Where :meth:`write` puts the file (the test's temporary folder)."""
        self.data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
        # One mixer process, as the tests of one service expect (its pid, its lessons.json);
        # tests of the node (tests/integration/test_workers.py) set workers.
        self.data["mixer"]["workers"] = 0

    @property
    def mixer(self) -> dict[str, Any]:
        """The ``mixer`` section, to edit."""
        section: dict[str, Any] = self.data["mixer"]
        return section

    def without_services(self) -> County:
        """Analytics and the recorder off: tests of signaling, lessons or the API alone."""
        self.data["analytics"] = {"enabled": False}
        self.data["recorder"] = {"enabled": False}
        return self

    def synthetic_cameras(self, **camera: Any) -> County:
        """Every classroom's camera synthetic with ``camera`` settings (width, height, fps)."""
        for room in self.data["classrooms"]:
            room.setdefault("devices", {})["camera"] = {"kind": "synthetic", **camera}
        return self

    def for_ops(self, **ops: Any) -> County:
        """Light media (320x180 at 10 fps, easy on 2 cores) and the dashboard sampling
        every 0.2 s, plus ``ops`` settings: in-process tests of the dashboard and APIs."""
        self.data["media"].update({"width": 320, "height": 180, "fps": 10})
        self.data["ops"].update({"sample_interval_s": 0.2, **ops})
        return self

    def config(self, source: str = "<config>") -> CountyConfig:
        """The validated config of the data as edited so far."""
        return parse_config(self.data, source)

    def write(self, name: str = "county.yaml") -> Path:
        """Write the data as YAML into :attr:`tmp` (for ``--config`` of real processes)."""
        path = self.tmp / name
        path.write_text(yaml.safe_dump(self.data, allow_unicode=True), encoding="utf-8")
        return path
