"""The classroom screen: the assigned view full screen, with a small status strip a teacher
can read from the back of the room (connected, latency, hand raised, microphone level).

Drawn with pygame (SDL: X11/Wayland on Linux, Windows, macOS). Text is Chinese first
with English; a CJK font is looked up among the usual system fonts (WenQuanYi / Noto CJK
on Linux, Microsoft YaHei / SimHei on Windows).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from syncclass.errors import DeviceError

__all__ = ["ScreenStatus", "ScreenVideoSink"]

logger = logging.getLogger(__name__)

_CJK_FONTS = "wenquanyizenhei,notosanscjksc,notosanscjk,microsoftyahei,simhei,pingfangsc"
_CJK_FONT_FILES = ["/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
                   "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"]

GREEN = (26, 160, 70)
RED = (200, 40, 30)
AMBER = (245, 184, 0)
GREY = (120, 120, 130)
WHITE = (240, 240, 240)
STRIP_BG = (24, 26, 32)


@dataclass(frozen=True)
class ScreenStatus:
    """What the status strip shows."""

    connected: bool = False
    """Signaling connection to the mixer is up."""
    lesson: str = ""
    """Lesson line, e.g. ``上课中 live · 数学``; empty when no lesson."""
    latency_ms: float | None = None
    """Median glass-to-glass latency of the view, ms (``None``: not measured)."""
    hand_raised: bool = False
    """This classroom's hand is up (receiving) / a classroom raised its hand (main)."""
    mic_level_dbov: float = -127.0
    """Microphone level, dBov (0 = full scale)."""
    mic_muted: bool = False


class ScreenVideoSink:
    """A (full-screen) window: the received view, scaled with its aspect kept, above a
    status strip. ``status`` is called on every redraw. :meth:`refresh` redraws without a
    new frame (the idle picture when no lesson runs); call it ~2x per second.

    ``SDL_VIDEODRIVER=dummy`` runs it without a display.
    """

    def __init__(self, title: str, *, fullscreen: bool = True,
                 status: Callable[[], ScreenStatus] | None = None,
                 size: tuple[int, int] = (1280, 720)) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError as exc:
            raise DeviceError(
                f"screen: pygame is not installed ({exc}); install the 'window' extra"
            ) from None
        self._pg: Any = pygame
        try:
            pygame.display.init()
            pygame.font.init()
        except pygame.error as exc:
            raise DeviceError(f"screen: no display available ({exc}); set DISPLAY, or use a "
                              "'file' or 'null' screen") from None
        self.title = title
        self.fullscreen = fullscreen
        self.status = status
        self.frames = 0
        """Frames shown."""
        self.quit_requested = False
        """The window was closed (or Esc pressed in full screen)."""
        self._closed = False
        pygame.display.set_caption(title)
        try:
            if fullscreen:
                self._screen = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
                pygame.mouse.set_visible(False)  # no cursor over the lesson
            else:
                self._screen = pygame.display.set_mode(size, pygame.RESIZABLE)
        except pygame.error as exc:
            raise DeviceError(f"screen: cannot open a window: {exc}") from None
        self._last: Any = None  # the last frame as a pygame surface, scaled
        self._fonts: dict[int, Any] = {}
        self._font_path = self._find_font()
        self._draw(None)

    def _find_font(self) -> str | None:
        for path in _CJK_FONT_FILES:
            if os.path.isfile(path):
                return path
        match = self._pg.font.match_font(_CJK_FONTS)
        if match is None:
            logger.warning("screen: no CJK font found; Chinese text may show as boxes")
        return str(match) if match else None

    def _font(self, size: int) -> Any:
        if size not in self._fonts:
            self._fonts[size] = self._pg.font.Font(self._font_path, size)
        return self._fonts[size]

    @property
    def size(self) -> tuple[int, int]:
        """Window size, px."""
        w, h = self._screen.get_size()
        return int(w), int(h)

    def strip_height(self) -> int:
        """Height of the status strip, px."""
        return max(28, self.size[1] // 16)

    def _pump(self) -> None:
        pg = self._pg
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.quit_requested = True
            elif event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE and self.fullscreen:
                self.quit_requested = True
            elif event.type == pg.VIDEORESIZE:
                self._last = None

    def _draw(self, frame: av.VideoFrame | None) -> None:
        pg = self._pg
        screen = self._screen
        sw, sh = self.size
        strip = self.strip_height()
        area_h = sh - strip
        screen.fill((0, 0, 0))
        if frame is not None:
            scale = min(sw / frame.width, area_h / frame.height)
            w = max(2, round(frame.width * scale) & ~1)
            h = max(2, round(frame.height * scale) & ~1)
            rgb = frame.to_ndarray(width=w, height=h, format="rgb24")  # swscale: one pass
            self._last = (pg.image.frombuffer(np.ascontiguousarray(rgb), (w, h), "RGB"),
                          ((sw - w) // 2, (area_h - h) // 2))
        if self._last is not None:
            surface, pos = self._last
            screen.blit(surface, pos)
        else:
            font = self._font(max(18, sh // 18))
            text = font.render("等待上课 · Waiting for the lesson", True, GREY)
            screen.blit(text, ((sw - text.get_width()) // 2, (area_h - text.get_height()) // 2))
        self._draw_strip(sw, sh, strip)
        pg.display.flip()

    def _draw_strip(self, sw: int, sh: int, strip: int) -> None:
        pg = self._pg
        screen = self._screen
        st = self.status() if self.status is not None else ScreenStatus()
        top = sh - strip
        pg.draw.rect(screen, STRIP_BG, (0, top, sw, strip))
        font = self._font(max(12, strip * 5 // 9))
        pad = strip // 3
        x = pad
        mid = top + strip // 2

        def text(s: str, color: tuple[int, int, int]) -> None:
            nonlocal x
            surf = font.render(s, True, color)
            screen.blit(surf, (x, mid - surf.get_height() // 2))
            x += surf.get_width() + 2 * pad

        r = strip // 4
        pg.draw.circle(screen, GREEN if st.connected else RED, (x + r, mid), r)
        x += 2 * r + pad
        text("已连接 connected" if st.connected else "未连接 disconnected", WHITE)
        if st.lesson:
            text(st.lesson, WHITE)
        if st.latency_ms is not None:
            text(f"延迟 latency {st.latency_ms:.0f} ms", WHITE)
        if st.hand_raised:
            pg.draw.rect(screen, AMBER, (x - pad // 2, top + 3, 1, strip - 6), 0)
            text("举手 hand raised", AMBER)
        # Microphone meter at the right end: -60 .. 0 dBov.
        meter_w = max(60, sw // 8)
        label = "麦克风静音 mic muted" if st.mic_muted else "麦克风 mic"
        surf = font.render(label, True, RED if st.mic_muted else WHITE)
        mx = sw - pad - meter_w
        screen.blit(surf, (mx - pad - surf.get_width(), mid - surf.get_height() // 2))
        bar_h = strip // 3
        pg.draw.rect(screen, GREY, (mx, mid - bar_h // 2, meter_w, bar_h), 1)
        level = 0.0 if st.mic_muted else min(1.0, max(0.0, (st.mic_level_dbov + 60) / 60))
        fill = int((meter_w - 2) * level)
        if fill:
            color = RED if st.mic_level_dbov > -3 else GREEN
            pg.draw.rect(screen, color, (mx + 1, mid - bar_h // 2 + 1, fill, bar_h - 2))

    def write(self, frame: av.VideoFrame) -> None:
        """Show one frame of the view (with a fresh status strip)."""
        if self._closed:
            return
        self._draw(frame)
        self.frames += 1
        self._pump()

    def refresh(self, idle: bool = False) -> None:
        """Redraw the strip over the last frame; ``idle``: drop the last frame and show the
        waiting picture (no lesson)."""
        if self._closed:
            return
        if idle:
            self._last = None
        self._draw(None)
        self._pump()

    def close(self) -> None:
        """Close the window; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pg.display.quit()
