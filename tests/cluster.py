"""Several mixer nodes on loopback for one test (issue 20), with light media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncclass.testing.cluster_support import ClusterDeployment
from tests.county import County


def light_cluster(county: County, tmp_path: Path, *, media: dict[str, Any],
                  camera: dict[str, Any], workers: int = 0,
                  recorder: bool = True) -> Iterator[ClusterDeployment]:
    """Yield a :class:`ClusterDeployment` of ``county`` on loopback (host candidates on
    127.0.0.1), analytics off, ``media`` fields and synthetic ``camera`` sizes set, the
    recorder off unless ``recorder``; on a failure every process's log tail is written.
    For a fixture: ``yield from light_cluster(...)``."""
    county.mixer["ice_host_addresses"] = ["127.0.0.1"]
    county.data["media"].update(media)
    county.synthetic_cameras(**camera)
    county.data["analytics"] = {"enabled": False}
    if not recorder:
        county.data["recorder"] = {"enabled": False}
    c = ClusterDeployment(county.data, tmp_path, workers=workers)
    try:
        yield c
    except BaseException:
        c.dep.write_logs(40)
        raise
    finally:
        c.close()
