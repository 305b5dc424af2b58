"""Several mixer nodes on loopback for one test (issue 20), with light media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncclass.testing.cluster_support import ClusterDeployment
from tests.county import County

LIGHT_MEDIA: dict[str, Any] = {"width": 640, "height": 360, "bitrate_kbps": 800,
                               "uplink_bitrate_kbps": 500}
"""The composed views of :func:`light_cluster` unless told otherwise."""
LIGHT_CAMERA: dict[str, Any] = {"width": 320, "height": 180, "fps": 15}
"""The synthetic cameras of :func:`light_cluster` unless told otherwise."""


def light_cluster(county: County, tmp_path: Path, *, media: dict[str, Any] | None = None,
                  camera: dict[str, Any] | None = None, workers: int = 0,
                  recorder: bool = True) -> Iterator[ClusterDeployment]:
    """Yield a :class:`ClusterDeployment` of ``county`` on loopback (host candidates on
    127.0.0.1), analytics off, ``media`` fields and synthetic ``camera`` sizes set
    (default :data:`LIGHT_MEDIA`, :data:`LIGHT_CAMERA`), the recorder off unless
    ``recorder``; on a failure every process's log tail is written. For a fixture:
    ``yield from light_cluster(...)``."""
    county.mixer["ice_host_addresses"] = ["127.0.0.1"]
    county.data["media"].update(LIGHT_MEDIA if media is None else media)
    county.synthetic_cameras(**(LIGHT_CAMERA if camera is None else camera))
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
