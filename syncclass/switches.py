"""The ``SYNCCLASS_*`` environment switches, read in this one place.

Everything else a process needs comes from the county config. These switches are for
side-by-side measurement (turn one of our aiortc adaptations off and compare), for the
one secret that must not sit in the config file or on a command line, and for where the
agent keeps local state. The entry points (:mod:`syncclass.cli`) read them once at
start-up with :meth:`Switches.from_environ` and pass the values on; code deeper down asks
:func:`current` only where no entry point hands the value in.

==============================  ===============  ===========================================
variable                        default          other values
==============================  ===============  ===========================================
``SYNCCLASS_AUDIO_LEVEL``       ``numpy``        ``stock``: aiortc's audio-level loop
``SYNCCLASS_JITTER_BUFFER``     ``low-latency``  ``video`` / ``audio``: ours only for that
                                                 kind; ``stock``: aiortc's for both
``SYNCCLASS_VIDEO_HOLE_WAIT_S`` (rtc default)    seconds a video hole waits; ``inf``: stock
``SYNCCLASS_NACK``              ``bounded``      ``stock``: aiortc's NACKs
``SYNCCLASS_AUDIO_DECODE``      ``inline``       ``thread``: aiortc's decoder threads (mixer)
``SYNCCLASS_MIX_OPUS``          ``mixer``        ``aiortc``: N-1 mixes through aiortc's encoder
``SYNCCLASS_GC``                ``tuned``        ``default``: CPython's GC thresholds
``SYNCCLASS_CV_THREADS``        ``1``            a thread count, or ``default`` (OpenCV's)
``SYNCCLASS_OPS_API_TOKEN``     (none)           the mixer's ``ops.api_token``, 16+ chars
``SYNCCLASS_STATE_DIR``         (per platform)   where the agent keeps the device choice
==============================  ===============  ===========================================
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = ["Switches", "current", "default_state_dir"]

PREFIX = "SYNCCLASS_"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the agent keeps local state without ``SYNCCLASS_STATE_DIR``:
    ``%LOCALAPPDATA%\\syncclass`` on Windows, else ``~/.local/state/syncclass``."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "syncclass"
    return Path.home() / ".local" / "state" / "syncclass"


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(PREFIX + name, default)
    if value not in allowed:
        raise ConfigError(f"{PREFIX}{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class Switches:
    """The environment switches of one process (see the module's table)."""

    audio_level: str = "numpy"
    """``numpy`` (our vectorised audio level in every sender) or ``stock``."""
    jitter_buffer: str = "low-latency"
    """``low-latency`` (ours for video and audio), ``video``, ``audio`` or ``stock``."""
    video_hole_wait_s: float | None = None
    """How long a video jitter buffer waits for a missing packet, s (``inf``: as stock
    aiortc); ``None``: :data:`syncclass.rtc.VIDEO_HOLE_WAIT_S`."""
    nack: str = "bounded"
    """``bounded`` (:mod:`syncclass.nack`) or ``stock``."""
    audio_decode: str = "inline"
    """``inline`` (the mixer decodes Opus on its event loop) or ``thread``."""
    mix_opus: str = "mixer"
    """``mixer`` (the mixer encodes its N-1 mixes itself) or ``aiortc``."""
    gc: str = "tuned"
    """``tuned`` (frozen start-up objects, fewer young collections) or ``default``."""
    cv_threads: int | None = 1
    """OpenCV's thread count; ``None``: OpenCV's default pool."""
    ops_api_token: str | None = field(default=None, repr=False)
    """The mixer's ``ops.api_token`` (a secret: never the command line); 16+ characters."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Where the agent keeps local state (the local page's device choice)."""

    @property
    def video_jitter_buffer(self) -> bool:
        """Our jitter buffer for video."""
        return self.jitter_buffer in ("low-latency", "video")

    @property
    def audio_jitter_buffer(self) -> bool:
        """Our jitter buffer for audio."""
        return self.jitter_buffer in ("low-latency", "audio")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Switches:
        """The switches set in ``environ`` (default: this process's environment); a bad
        value raises :class:`~syncclass.errors.ConfigError` naming the variable."""
        env = os.environ if environ is None else environ
        hole = env.get(PREFIX + "VIDEO_HOLE_WAIT_S")
        hole_wait_s: float | None = None
        if hole is not None:
            try:
                hole_wait_s = float(hole)
            except ValueError:
                hole_wait_s = math.nan
            if math.isnan(hole_wait_s) or hole_wait_s < 0:
                raise ConfigError(f"{PREFIX}VIDEO_HOLE_WAIT_S must be seconds >= 0 or 'inf'; "
                                  f"got {hole!r}")
        threads = env.get(PREFIX + "CV_THREADS", "1")
        cv_threads: int | None = None
        if threads != "default":
            try:
                cv_threads = int(threads)
            except ValueError:
                raise ConfigError(f"{PREFIX}CV_THREADS must be a thread count or 'default', "
                                  f"got {threads!r}") from None
        # Checked (16+ characters) by the mixer, the only process that uses it.
        token = env.get(PREFIX + "OPS_API_TOKEN") or None
        state = env.get(PREFIX + "STATE_DIR")
        return cls(
            audio_level=_choice(env, "AUDIO_LEVEL", "numpy", ("numpy", "stock")),
            jitter_buffer=_choice(env, "JITTER_BUFFER", "low-latency",
                                  ("low-latency", "video", "audio", "stock")),
            video_hole_wait_s=hole_wait_s,
            nack=_choice(env, "NACK", "bounded", ("bounded", "stock")),
            audio_decode=_choice(env, "AUDIO_DECODE", "inline", ("inline", "thread")),
            mix_opus=_choice(env, "MIX_OPUS", "mixer", ("mixer", "aiortc")),
            gc=_choice(env, "GC", "tuned", ("tuned", "default")),
            cv_threads=cv_threads,
            ops_api_token=token,
            state_dir=Path(state) if state else default_state_dir(env),
        )


def current() -> Switches:
    """The switches of this process's environment now. For code that no entry point hands
    them to (a library used in tests, whose environment may change between calls); the
    entry points read :meth:`Switches.from_environ` once and pass the values on."""
    return Switches.from_environ()
