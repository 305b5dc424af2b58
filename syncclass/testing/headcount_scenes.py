"""Classroom-sized test pictures with a known number of faces (see tests/data/headcount)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "headcount"
"""The face and background pictures (in the repository's tests, not in the package)."""
BACKGROUNDS = ["brick", "grass", "gravel", "coffee", "chelsea"]
Box = tuple[int, int, int, int]


def _read(name: str) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(DATA / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(DATA / name)
    return np.asarray(img, dtype=np.uint8)


def make_scene(faces: int, seed: int, width: int = 1280, height: int = 720,
               min_px: int = 70, max_px: int = 160) -> tuple[npt.NDArray[np.uint8], list[Box]]:
    """A BGR picture with ``faces`` pasted faces on a textured background, and the boxes
    ``(x, y, w, h)`` of the faces (the face is the middle ~55% of each pasted crop)."""
    rng = np.random.default_rng(seed)
    bg = _read(f"bg_{BACKGROUNDS[seed % len(BACKGROUNDS)]}.jpg")
    scene = np.asarray(cv2.resize(bg, (width, height), interpolation=cv2.INTER_LINEAR),
                       dtype=np.uint8)
    face = _read("face_astronaut.jpg")
    placed: list[tuple[int, int, int]] = []
    boxes: list[Box] = []
    tries = 0
    while len(placed) < faces:
        tries += 1
        if tries > 10_000:
            raise RuntimeError(f"cannot place {faces} faces")
        size = int(rng.integers(min_px, max_px + 1))
        x = int(rng.integers(0, width - size))
        y = int(rng.integers(0, height - size))
        if any(abs(x - px) < (size + ps) // 2 + 10 and abs(y - py) < (size + ps) // 2 + 10
               for px, py, ps in placed):
            continue
        crop = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain = float(rng.uniform(0.65, 1.25))
        crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        scene[y : y + size, x : x + size] = crop
        placed.append((x, y, size))
        # The face inside the crop (see SOURCE.md: the crop has a margin around it).
        boxes.append((x + int(size * 0.24), y + int(size * 0.23), int(size * 0.52),
                      int(size * 0.52)))
    return scene, boxes


def iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def match(detected: list[Box], truth: list[Box], threshold: float = 0.3) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), greedy one-to-one by IoU."""
    free = list(truth)
    tp = 0
    for d in detected:
        best = max(free, key=lambda t: iou(d, t), default=None)
        if best is not None and iou(d, best) >= threshold:
            free.remove(best)
            tp += 1
    return tp, len(detected) - tp, len(free)
