"""Text bitmaps in any script (Chinese classroom labels, slide text) from a CJK font.

OpenCV's Hershey fonts draw ASCII only, so labels are rendered with FreeType through
Pillow's :class:`PIL.ImageFont.FreeTypeFont` from a CJK font of the system (Debian:
``fonts-wqy-zenhei``, installed by ``scripts/bootstrap.sh``; Noto CJK works too). A
bitmap is rendered once per (text, size) and cached: composition copies it each frame.

The font file is found once per process: ``SYNCCLASS_CJK_FONT`` if set, else a list of
known paths (Debian, Windows), else ``fc-match``. Reading the file is this module's only
I/O; it needs no sockets, devices or event loop.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from .errors import FontMissingError

logger = logging.getLogger(__name__)

FONT_ENV = "SYNCCLASS_CJK_FONT"
"""Environment variable naming a .ttf/.ttc/.otf font file that has CJK glyphs."""

KNOWN_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # Debian fonts-wqy-zenhei
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian fonts-noto-cjk
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian fonts-wqy-microhei
    "C:/Windows/Fonts/msyh.ttc",  # Microsoft YaHei
    "C:/Windows/Fonts/simhei.ttf",
)
"""Font files tried in order when ``SYNCCLASS_CJK_FONT`` is not set."""

SLIDE_FONTS: tuple[str, ...] = (
    "C:/Windows/Fonts/msyh.ttc",  # Microsoft YaHei, the usual font of Chinese courseware
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian fonts-wqy-microhei
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian fonts-noto-cjk
)
"""Fonts tried first for slide text (the synthetic courseware), when
``SYNCCLASS_CJK_FONT`` is not set: sans faces like the YaHei of real slides (WenQuanYi
Zen Hei's glyphs are read worse by OCR: 94.9 % of the deck's characters against 100 %
with Micro Hei, benchmarks/README.md); else the label font."""

_PROBE = "中"  # a glyph the font must have


def _fc_match() -> str | None:
    """The file fontconfig picks for Simplified Chinese, if fontconfig is installed."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-f", "%{file}", ":lang=zh-cn"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _has_cjk(path: str) -> bool:
    try:
        font = ImageFont.truetype(path, 16)
    except OSError:
        return False
    # A font without the glyph draws nothing (or a .notdef box equal to another missing
    # glyph's): compare against a private-use code point that no font draws.
    return bool(font.getmask(_PROBE).getbbox()) and (
        np.asarray(font.getmask(_PROBE)).tobytes() != np.asarray(font.getmask("\ue000")).tobytes()
    )


@functools.cache
def find_cjk_font() -> Path:
    """The font file used for labels; :class:`FontMissingError` (saying what to install)
    if there is none."""
    tried: list[str] = []
    env = os.environ.get(FONT_ENV)
    if env:
        if Path(env).is_file() and _has_cjk(env):
            return Path(env)
        raise FontMissingError(f"{FONT_ENV}={env!r} is not a font file with Chinese glyphs")
    candidates = list(KNOWN_FONTS)
    matched = _fc_match()
    if matched:
        candidates.append(matched)
    for path in candidates:
        tried.append(path)
        if Path(path).is_file() and _has_cjk(path):
            logger.debug("CJK font: %s", path)
            return Path(path)
    raise FontMissingError(
        "no font with Chinese glyphs for video labels: install Debian's fonts-wqy-zenhei "
        f"(apt-get install fonts-wqy-zenhei) or set {FONT_ENV} to a .ttf/.ttc file; "
        f"tried {', '.join(tried) or 'nothing'}"
    )


@functools.cache
def find_slide_font() -> Path:
    """The font file for slide text: ``SYNCCLASS_CJK_FONT`` if set, else the first of
    :data:`SLIDE_FONTS` installed, else :func:`find_cjk_font`."""
    if os.environ.get(FONT_ENV):
        return find_cjk_font()
    for path in SLIDE_FONTS:
        if Path(path).is_file() and _has_cjk(path):
            logger.debug("slide font: %s", path)
            return Path(path)
    return find_cjk_font()


FontUse = Literal["label", "slide"]


@functools.lru_cache(maxsize=16)
def _font(size_px: int, use: FontUse = "label") -> ImageFont.FreeTypeFont:
    path = find_slide_font() if use == "slide" else find_cjk_font()
    return ImageFont.truetype(str(path), size_px)


def text_width(text: str, size_px: int, use: FontUse = "label") -> int:
    """Advance width of ``text`` at ``size_px`` (font size in pixels), in pixels, in the
    label or the slide font."""
    return int(np.ceil(_font(size_px, use).getlength(text)))


@functools.lru_cache(maxsize=512)
def _render(text: str, size_px: int, use: FontUse) -> npt.NDArray[np.uint8]:
    font = _font(size_px, use)
    ascent, descent = font.getmetrics()
    width = max(1, text_width(text, size_px, use))
    image = Image.new("L", (width, ascent + descent), 0)
    ImageDraw.Draw(image).text((0, 0), text, font=font, fill=255)
    mask = np.asarray(image, dtype=np.uint8).copy()
    mask.flags.writeable = False
    return mask


def render_text(text: str, size_px: int, use: FontUse = "label") -> npt.NDArray[np.uint8]:
    """Coverage of ``text`` (0 = background, 255 = ink), one line, ``size_px`` font size
    in pixels, in the label font or (``use="slide"``) the slide font; height = the font's
    ascent + descent, width = the text's advance. Cached per (text, size, use); the array
    is read-only."""
    if size_px < 4:
        raise ValueError(f"font size must be at least 4 px, got {size_px}")
    return _render(text, size_px, use)


def fit_text(text: str, size_px: int, max_width: int) -> str | None:
    """``text``, shortened with '…' if needed to be at most ``max_width`` px wide at
    ``size_px``; None if not even one character fits."""
    if text_width(text, size_px) <= max_width:
        return text
    for end in range(len(text) - 1, 0, -1):
        shown = text[:end].rstrip() + "…"
        if text_width(shown, size_px) <= max_width:
            return shown
    return None
