"""What ``syncclass check-config`` checks beyond the schema: that the files and folders a
county config names are there (on the machine running the check).

Every path field of the config (:func:`syncclass.config.path_field`: device files, TLS
certificates, the CA file, the face cascade, output folders; a font or any new path
field marked the same way is checked too) and a ``sqlite:///`` database give one
:class:`Finding` when something is wrong: an input file that is missing or not a file,
an output folder that cannot be created. A classroom's missing device is only a warning
when its ``devices.fallback_to_synthetic`` is on (the agent then uses the synthetic
source), and paths of a device kind that does not use them are not checked. Output
folders are warnings: one config serves every machine, and a folder matters only where
its process (mixer, recorder) runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import (
    AudioDeviceConfig,
    CountyConfig,
    PathKind,
    SinkConfig,
    VideoDeviceConfig,
    path_fields,
)

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    level: Level
    field: str
    """Field path in the config, e.g. ``classrooms[1].devices.camera.path``."""
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.field}: {self.message}"


def _in_use(owner: object) -> bool:
    """Whether a path of ``owner`` is used (a device's ``path`` only by some kinds)."""
    if isinstance(owner, VideoDeviceConfig):
        return owner.kind in ("file", "camera")
    if isinstance(owner, AudioDeviceConfig):
        return owner.kind in ("file", "script")
    if isinstance(owner, SinkConfig):
        return owner.kind == "file"
    return True


def _creatable(folder: Path) -> str | None:
    """Why ``folder`` cannot be used as an output folder, or ``None`` when it can (it is
    a writable folder, or its nearest existing parent is one)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return "no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def _check(kind: PathKind, value: str) -> str | None:
    path = Path(value).expanduser()
    if kind == "file":
        if not path.exists():
            return f"{value}: no such file"
        if path.is_dir():
            return f"{value}: is a folder, not a file"
        if not os.access(path, os.R_OK):
            return f"{value}: not readable by this user"
        return None
    if kind == "dir":
        if not path.is_dir():
            return f"{value}: no such folder"
        return None
    if kind == "out_dir":
        why = _creatable(path)
        return None if why is None else f"{value}: cannot be created ({why})"
    why = _creatable(path.parent)  # out_file
    return None if why is None else f"{value}: its folder cannot be created ({why})"


def check_paths(config: CountyConfig) -> list[Finding]:
    """Problems with the files and folders ``config`` names, errors first."""
    fallback: dict[str, bool] = {}
    for i, room in enumerate(config.classrooms):
        fallback[f"classrooms[{i}]"] = room.devices.fallback_to_synthetic
    found: list[Finding] = []
    for where, value, kind, owner in path_fields(config):
        if not _in_use(owner):
            continue
        why = _check(kind, value)
        if why is None:
            continue
        level: Level = "warning" if kind in ("out_dir", "out_file") else "error"
        classroom = where.split(".devices.", 1)[0] if ".devices." in where else ""
        source = isinstance(owner, VideoDeviceConfig | AudioDeviceConfig)
        if source and fallback.get(classroom, False):
            level = "warning"
            why += " (fallback_to_synthetic: the synthetic source is used instead)"
        found.append(Finding(level, where, why))
    url = config.analytics.database_url
    if url and url.startswith("sqlite:///"):
        why = _creatable(Path(url[len("sqlite:///"):]).parent)
        if why is not None:
            found.append(Finding("warning", "analytics.database_url",
                                 f"{url}: its folder cannot be created ({why})"))
    return sorted(found, key=lambda f: f.level != "error")
