"""Classroom labels in any script (issue 21): the config accepts Chinese names and says in
words what it refuses; the compositor draws them with a CJK font."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mixer.compose import LABEL_BOX_Y, Compositor, SourceFrame
from syncclass import fonts
from syncclass.config import parse_config
from syncclass.errors import ConfigError, FontMissingError
from syncclass.layout import Rect, Tile

from .test_compose import FakeClock, planes, solid

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "county.yaml"


@pytest.fixture
def data() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text(encoding="utf-8")))


def test_chinese_label_accepted(data: dict[str, Any]) -> None:
    data["classrooms"][1]["label"] = "河头小学 三(1)班"
    config = parse_config(data, "county.yaml")
    assert config.classrooms[1].label == "河头小学 三(1)班"


@pytest.mark.parametrize(
    ("label", "why"),
    [("三班\n二组", "character 3 is U+000A"), ("", "empty"), ("   ", "empty"),
     ("班" * 41, "41 characters")],
)
def test_bad_label_explained_in_words(data: dict[str, Any], label: str, why: str) -> None:
    data["classrooms"][1]["label"] = label
    with pytest.raises(ConfigError) as info:
        parse_config(data, "county.yaml")
    message = str(info.value)
    assert "classrooms[1].label: a label is 1 to 40 printable characters in any language" in message
    assert why in message
    assert "\\x20" not in message and "pattern" not in message


def _label_region(label: str) -> np.ndarray:
    """Luma of the label box drawn under a live 320x180 tile (a receiving classroom in
    the students' view)."""
    clock = FakeClock()
    tile = Tile("a", label, Rect(0, 0, 320, 180))
    comp = Compositor(320, 180, [tile], freeze_timeout_s=1.0, clock=clock)
    out = comp.compose({"a": SourceFrame(solid(320, 180, 128, 128, 128), clock.now)})
    y, _, _ = planes(out)
    return y[180 - 40 : 180, 0:320].copy()


def test_chinese_labels_drawn_with_glyphs() -> None:
    one = _label_region("河头小学 三(1)班")
    two = _label_region("实验小学 五(2)班")
    for region in (one, two):
        box = region == LABEL_BOX_Y
        ink = region > 200
        assert box.sum() > 500  # the dark box is there
        assert ink.sum() > 100  # with bright glyph strokes in it
    # Different names, different pictures (an ASCII-only font drew both as '???? ?(?)?').
    differing = (np.abs(one.astype(int) - two.astype(int)) > 60).sum()
    assert differing > 100


def test_label_bitmaps_are_cached() -> None:
    assert fonts.render_text("三(1)班", 16) is fonts.render_text("三(1)班", 16)
    assert fonts.fit_text("河头小学三年级一班", 16, 60) == "河头…"
    assert fonts.fit_text("河", 16, 3) is None


def test_missing_font_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    fonts.find_cjk_font.cache_clear()
    try:
        monkeypatch.setattr(fonts, "KNOWN_FONTS", (str(tmp_path / "none.ttc"),))
        monkeypatch.setattr(fonts, "_fc_match", lambda: None)
        with pytest.raises(FontMissingError, match="fonts-wqy-zenhei"):
            fonts.find_cjk_font()
        monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "none.ttc"))
        with pytest.raises(FontMissingError, match="SYNCCLASS_CJK_FONT"):
            fonts.find_cjk_font()
    finally:
        fonts.find_cjk_font.cache_clear()
