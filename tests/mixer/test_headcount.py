"""Head count on pictures with a known number of faces (sources: tests/data/headcount)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from mixer.headcount import HeadCounter, find_cascade
from syncclass.errors import ConfigError
from tests.headcount_scenes import make_scene, match

ROOT = Path(__file__).resolve().parents[2]
# Held out: the detector's settings were chosen on seeds 0..29.
SEEDS = range(1000, 1024)
COUNTS = [0, 1, 2, 3, 5, 8]


@pytest.fixture(scope="module")
def counter() -> HeadCounter:
    return HeadCounter()


def test_precision_and_recall_on_known_faces(counter: HeadCounter) -> None:
    tp = fp = fn = exact = 0
    rows = []
    for seed in SEEDS:
        k = COUNTS[seed % len(COUNTS)]
        scene, boxes = make_scene(k, seed)
        det = counter.detect(cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY))
        t, f, n = match(det, boxes)
        tp, fp, fn = tp + t, fp + f, fn + n
        exact += len(det) == k
        rows.append({"seed": seed, "faces": k, "detected": len(det), "tp": t, "fp": f, "fn": n})
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    out = ROOT / "artifacts" / "headcount.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"precision": precision, "recall": recall, "exact_count": exact,
                               "pictures": len(rows), "rows": rows}, indent=2))
    assert precision >= 0.9, rows
    assert recall >= 0.9, rows
    assert exact >= 0.75 * len(rows)


def test_no_faces_on_backgrounds(counter: HeadCounter) -> None:
    for seed in range(5):
        scene, _ = make_scene(0, seed)
        assert counter.count(cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)) == 0


def test_bad_input_is_refused(counter: HeadCounter) -> None:
    scene, _ = make_scene(1, 1)
    with pytest.raises(ValueError, match="2-D"):
        counter.detect(scene)


def test_missing_cascade_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        find_cascade(str(tmp_path / "nope.xml"))
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ConfigError, match="cannot load"):
        HeadCounter(str(bad))
