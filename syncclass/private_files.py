"""Files of minors' data (reports, comments, the analytics database, recordings): readable
by the service's own user only.

Directories are created ``0700`` and files written ``0600`` whatever the process umask, so
another account on the machine can neither list a lesson's folder nor read its files.
Files that a library or ``ffmpeg`` creates get :func:`make_private` right after.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
"""Mode of every directory holding lesson data (owner only)."""
FILE_MODE = 0o600
"""Mode of every file of lesson data (owner read/write only)."""


def private_dir(path: Path, own: bool = False) -> Path:
    """``mkdir -p path``, each directory it creates getting :data:`DIR_MODE`. With ``own``
    (one lesson's folder, which only this service writes) an existing ``path`` is set to
    :data:`DIR_MODE` too (tightening a folder an older version left ``0755``); existing
    roots (a configured ``data_dir``, which may be shared) are left as they are."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            d.mkdir(mode=DIR_MODE)
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask
    if own:
        os.chmod(path, DIR_MODE)
    return path


def make_private(path: Path) -> None:
    """Set an existing file to :data:`FILE_MODE`."""
    os.chmod(path, FILE_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` created or truncated with
    :data:`FILE_MODE`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)  # an existing file keeps its mode otherwise
        fh.write(raw)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists with :data:`FILE_MODE` (before a library opens it for
    writing: an existing file keeps its mode when it is truncated)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
