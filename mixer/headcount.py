"""Head count: pupils visible in a classroom camera picture, estimated by face detection.

Method: OpenCV's Viola-Jones cascade for frontal faces (``haarcascade_frontalface_alt2``)
on the luma plane scaled to at most 960 px wide; scale step 1.1, at least 7 neighbouring
hits, faces at least ``min_face_px`` tall. CPU per 1280x720 frame (benchmarks/analytics.py):
≈ 200 ms at 960 px, ≈ 100 ms at 640 px, ≈ 290 ms at full size. Chosen on
tests/data/headcount scenes (seeds 0..29): ``alt2`` with 7 neighbours had no false faces on
brick/grass/gravel textures where ``default`` (and histogram equalisation) found many.
The cascade file ships with
Debian's ``opencv-data`` package (``/usr/share/opencv4/haarcascades``) or inside an
OpenCV wheel that bundles it (``cv2.data.haarcascades``); nothing is downloaded.

Limits (say them with every figure): it counts *frontal, unoccluded, lit* faces. Pupils
turned away, looking down at their books, hidden behind others or smaller than
``min_face_px`` (far rows of a wide classroom shot) are missed; posters and patterned
backgrounds can yield false faces. Treat the median over a lesson as a lower bound of
attendance, not a roll call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from syncclass.errors import ConfigError

logger = logging.getLogger(__name__)

CASCADE_NAME = "haarcascade_frontalface_alt2.xml"
CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")
METHOD = ("OpenCV Haar cascade (haarcascade_frontalface_alt2), frontal faces only; "
          "a lower bound: turned-away, occluded or tiny faces are missed")


def find_cascade(path: str | None = None) -> Path:
    """The face cascade file: ``path`` if given, else the first installed one."""
    candidates = [Path(path)] if path else []
    if not path:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if data:
            candidates.append(Path(data) / CASCADE_NAME)
        candidates += [Path(d) / CASCADE_NAME for d in CASCADE_DIRS]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(
        f"face cascade {CASCADE_NAME} not found (looked in {', '.join(map(str, candidates))}); "
        "install Debian's opencv-data or set analytics.head_count_cascade"
    )


class HeadCounter:
    """Counts frontal faces in a grey picture. Not thread-safe: one per thread."""

    def __init__(self, cascade_path: str | None = None, min_face_px: int = 20,
                 max_width: int = 960) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError("this OpenCV build has no CascadeClassifier "
                              "(install opencv-contrib-python-headless)")
        self.path = find_cascade(cascade_path)
        try:
            self._cascade = cv2.CascadeClassifier(str(self.path))
        except (cv2.error, SystemError) as exc:
            raise ConfigError(f"face cascade {self.path}: cannot load: {exc}") from None
        if self._cascade.empty():
            raise ConfigError(f"face cascade {self.path}: cannot load")
        self.min_face_px = min_face_px
        self.max_width = max_width

    def detect(self, gray: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(x, y, w, h)`` in the picture's pixels."""
        if gray.ndim != 2:
            raise ValueError(f"expected a 2-D grey picture, got shape {gray.shape}")
        scale = 1.0
        img: Any = gray
        if gray.shape[1] > self.max_width:
            scale = self.max_width / gray.shape[1]
            img = cv2.resize(gray, (self.max_width, round(gray.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        found: Any = self._cascade.detectMultiScale(
            np.ascontiguousarray(img), scaleFactor=1.1, minNeighbors=7,
            minSize=(self.min_face_px, self.min_face_px),
        )
        return [(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
                for x, y, w, h in (found if len(found) else [])]

    def count(self, gray: npt.NDArray[np.uint8]) -> int:
        return len(self.detect(gray))
