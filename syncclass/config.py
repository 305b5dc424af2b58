"""Deployment configuration: schools, classrooms, pairings (结对), timetable, views.

A county's config is one YAML file (see ``configs/county.yaml``). :func:`load_config`
turns it into typed, validated models; any problem raises :class:`ConfigError` naming
the file, the field path (``classrooms[1].token``) and what is wrong, in words (a field
with a ``pattern`` says what it allows, see :func:`worded_pattern`). Relative file and
folder paths in a config file are taken relative to the file's own folder
(:func:`resolve_paths`), so every command finds the same files from any directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .auth import check_password_hash_format
from .directing import DirectingRules
from .errors import ConfigError
from .turn import TurnUrl

PATTERN_WORDS: dict[str, tuple[str, bool]] = {}
"""Per regular expression of a ``Field(pattern=...)``: what it allows, in words with an
example, and whether an error may quote the refused value (not for URLs, which may carry
keys). Filled by :func:`worded_pattern`; :func:`parse_config` reads it."""


def worded_pattern(pattern: str, words: str, *, quote_value: bool = True) -> Any:
    """A ``Field(pattern=...)`` whose validation error says ``words`` (what is allowed,
    with an example) instead of quoting the regular expression."""
    PATTERN_WORDS[pattern] = (words, quote_value)
    return Field(pattern=pattern)


PathKind = Literal["file", "dir", "out_dir", "out_file"]
"""What a config path names: an input ``file`` or ``dir`` that must exist, an output
``out_dir`` (created when missing) or an ``out_file`` (its folder is created)."""


_PATH_KINDS: dict[str, PathKind] = {"file": "file", "dir": "dir", "out_dir": "out_dir",
                                    "out_file": "out_file"}


def path_field(kind: PathKind, default: Any = None) -> Any:
    """A path field: resolved against the config file's folder by :func:`resolve_paths`
    and checked by ``syncclass check-config`` (:mod:`syncclass.config_check`)."""
    return Field(default=default, json_schema_extra={"path_kind": kind})


Identifier = Annotated[str, worded_pattern(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    "use 1-63 characters: lowercase letters a-z, digits 0-9, '-' and '_', starting with a "
    "letter or digit (no spaces, capitals or Chinese characters), e.g. 'hetou-3'")]
LESSON_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,127}$"
"""The id rule of lessons: the id rule of every configured id (lower-case letters, digits,
``_``, ``-``; never ``.`` or ``/``), longer, since a lesson id is a timetable or pairing id
plus ``-YYYYmmdd-HHMMSS-<n>``. Every lesson id read from the wire or a state file is
checked with it before it names a folder."""
LessonId = Annotated[str, worded_pattern(
    LESSON_ID_PATTERN,
    "use 1-128 characters: lowercase letters a-z, digits 0-9, '-' and '_', starting with a "
    "letter or digit (no '.', '/' or spaces), e.g. 'math-g3-20261205-080000-1'")]
_LESSON_ID_RE = re.compile(LESSON_ID_PATTERN)


def is_lesson_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a lesson id (:data:`LESSON_ID_PATTERN`), safe as a folder name."""
    return isinstance(value, str) and _LESSON_ID_RE.fullmatch(value) is not None


ClassroomRole = Literal["main", "receiving"]
LayoutKind = Literal["speaker", "grid"]
SourceSelector = Literal["main", "receiving"]
ViewName = Identifier


class _Model(BaseModel):
    # Attribute docstrings become field descriptions: a "Field required" error quotes it.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SchoolConfig(_Model):
    id: Identifier
    name: str = Field(min_length=1)
    """Human name, e.g. 县第一实验小学."""
    kind: Literal["main", "receiving"]
    """``main``: the strong school that teaches (名校); ``receiving``: a rural teaching point."""


class VideoDeviceConfig(_Model):
    kind: Literal["synthetic", "file", "camera"] = "synthetic"
    path: str | None = path_field("file")
    """Media file path (``file``), or device path / RTSP URL (``camera``)."""
    index: int | None = Field(default=None, ge=0)
    """OpenCV camera index (``camera``)."""
    name: str | None = None
    """Camera name or a unique part of it, as ``syncclass agent devices`` lists it
    (``camera``; Linux V4L2 names)."""
    width: int = Field(default=1280, ge=16, le=3840, multiple_of=2)
    height: int = Field(default=720, ge=16, le=2160, multiple_of=2)
    fps: float = Field(default=15.0, gt=0, le=60)

    @model_validator(mode="after")
    def _needs_location(self) -> VideoDeviceConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("a 'file' camera needs 'path'")
        if self.kind == "camera" and self.path is None and self.index is None and not self.name:
            raise ValueError("a 'camera' needs 'index', 'name' or 'path' (device path or "
                             "RTSP URL)")
        return self


class AudioDeviceConfig(_Model):
    kind: Literal["synthetic", "file", "microphone", "script"] = "synthetic"
    path: str | None = path_field("file")
    """Media file path (``file``), or a speech schedule JSON (``script``: clips played at
    given epoch times, see :mod:`edge_agent.scripted`)."""
    name: str | None = None
    """sounddevice input device name or a unique part of it (``microphone``; see
    ``syncclass agent devices``)."""
    index: int | None = Field(default=None, ge=0)
    """sounddevice input device index (``microphone``); takes precedence over ``name``."""
    tone_hz: float | None = Field(default=None, gt=20, lt=20000)
    """Synthetic tone frequency; defaults to the classroom's ``tone_hz``."""
    aec: bool = True
    """Cancel the echo of the classroom's speakers in the microphone (``microphone`` only:
    synthetic, file and script sources do not hear the speakers)."""
    noise_suppression: bool = True
    """Suppress steady noise (fans, projector) in the microphone (``microphone`` only)."""
    agc: bool = True
    """Automatic gain control of the microphone (``microphone`` only)."""

    @model_validator(mode="after")
    def _needs_location(self) -> AudioDeviceConfig:
        if self.kind in ("file", "script") and not self.path:
            raise ValueError(f"a '{self.kind}' microphone needs 'path'")
        return self


class SinkConfig(_Model):
    kind: Literal["null", "file", "window", "device"] = "null"
    """``window``: screen window (for speakers, same as ``device``); ``device``: the
    sound card (speakers) or the full-screen classroom display with status strip (screen)."""
    path: str | None = path_field("out_file")
    """Output file for ``file`` sinks (video: .mp4/.mkv, audio: .wav)."""
    fullscreen: bool = False
    name: str | None = None
    """Speakers: sounddevice output device name or a unique part of it (default output)."""
    index: int | None = Field(default=None, ge=0)
    """Speakers: sounddevice output device index; takes precedence over ``name``."""
    buffer_ms: float = Field(default=60.0, ge=10, le=500)
    """Speakers: playout buffer target, ms (playback starts at this fill)."""

    @model_validator(mode="after")
    def _needs_path(self) -> SinkConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("a 'file' sink needs 'path'")
        return self


class CoursewareConfig(_Model):
    """The main classroom's courseware (双流), sent beside its camera when shared."""

    kind: Literal["none", "synthetic", "screen", "file"] = "none"
    """``synthetic``: a slide deck with Chinese text (tests, demo); ``screen``: the PC's
    screen (x11grab on Linux, gdigrab on Windows); ``file``: a picture or video."""
    display: str | None = None
    """``screen``: the X display (``:0.0``, ``:0.0+x,y`` for a region); default ``:0.0``."""
    window: str | None = None
    """``screen`` on Windows: the title of the window to share (default: the desktop)."""
    video_size: str | None = None
    """``screen``: size of the captured region, e.g. ``1920x1080`` (default: the screen)."""
    path: str | None = None
    """``file``: the picture or video."""
    width: int = Field(default=1280, ge=160, le=3840, multiple_of=2)
    """``synthetic``: slide width, px."""
    height: int = Field(default=720, ge=90, le=2160, multiple_of=2)
    """``synthetic``: slide height, px."""
    max_fps: float = Field(default=10.0, gt=0, le=30)
    """Frames per second while the screen changes."""
    idle_fps: float = Field(default=1.0, gt=0, le=30)
    """Frames per second while the screen is still."""
    bitrate_kbps: int = Field(default=1200, ge=100, le=20000)
    """Encoder target, kbit/s (few frames, so many bits each: legible text)."""

    @model_validator(mode="after")
    def _needs(self) -> CoursewareConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("courseware of kind 'file' needs 'path'")
        if self.idle_fps > self.max_fps:
            raise ValueError("courseware idle_fps must not exceed max_fps")
        return self


class DevicesConfig(_Model):
    camera: VideoDeviceConfig = VideoDeviceConfig()
    microphone: AudioDeviceConfig = AudioDeviceConfig()
    screen: SinkConfig = SinkConfig()
    speakers: SinkConfig = SinkConfig()
    courseware: CoursewareConfig = CoursewareConfig()
    """The teacher's courseware (main classroom only)."""
    fallback_to_synthetic: bool = False
    """If a configured device is missing, use the synthetic source instead of failing."""


LABEL_MAX_CHARS = 40
"""Longest classroom label, in characters (any script)."""


def check_label(value: str) -> str:
    """``value`` if it is a valid classroom label, else ``ValueError`` saying in words
    what is allowed: 1 to :data:`LABEL_MAX_CHARS` printable characters in any language,
    not only spaces, no control characters or line breaks."""
    allowed = (f"a label is 1 to {LABEL_MAX_CHARS} printable characters in any language "
               "(e.g. '三(1)班' or 'Hetou 3'), without control characters or line breaks")
    if not value.strip():
        raise ValueError(f"{allowed}; got an empty label")
    if len(value) > LABEL_MAX_CHARS:
        raise ValueError(f"{allowed}; got {len(value)} characters")
    for index, ch in enumerate(value):
        if not ch.isprintable():
            raise ValueError(f"{allowed}; character {index + 1} is U+{ord(ch):04X}, "
                             "which cannot be printed")
    return value


class ClassroomConfig(_Model):
    id: Identifier
    school: Identifier
    name: str = Field(min_length=1)
    """Human name, e.g. 实验小学 三(1)班."""
    label: str
    """Short label burned into composed video, in any script (e.g. 三(1)班): 1 to
    :data:`LABEL_MAX_CHARS` printable characters, drawn with a CJK font."""
    role: ClassroomRole
    token: str = Field(min_length=16, repr=False)
    """Credential the classroom's agent presents to the mixer."""
    tone_hz: float = Field(default=440.0, gt=20, lt=20000)
    """Frequency of the synthetic microphone tone, distinct per classroom for tests."""
    devices: DevicesConfig = DevicesConfig()
    control_port: int = Field(default=0, ge=0, le=65535)
    """Port of the agent's local control page (0: pick a free one)."""

    @field_validator("label")
    @classmethod
    def _label_in_words(cls, value: str) -> str:
        return check_label(value)


class PairingConfig(_Model):
    id: Identifier
    main: Identifier
    """The main classroom that teaches."""
    receiving: list[Identifier] = Field(min_length=1)
    """Receiving classrooms that join its lessons by themselves."""


class ObserverConfig(_Model):
    """A teaching researcher (教研员) who watches lessons from a browser (同步教研): sees
    ``students_view``, hears the full mix, sends no media, writes time-stamped comments."""

    id: Identifier
    name: str = Field(min_length=1)
    """Human name, e.g. 县教研室 李老师."""
    token: str = Field(min_length=16, repr=False)
    """Credential the observer presents (unique among classrooms and observers)."""
    pairings: list[Identifier] = Field(min_length=1)
    """Pairings whose lessons this observer may watch and comment on."""


class TimetableEntry(_Model):
    id: Identifier
    pairing: Identifier
    subject: str = Field(min_length=1)
    grade: str = Field(min_length=1)
    teacher: str = Field(min_length=1)
    start: dt.time
    """Local start time of the lesson, ``"08:30"`` (``8:30`` and ``"8:30"`` are read
    the same; a number is refused, see :func:`_time_of_day`)."""
    duration_min: int = Field(default=40, gt=0, le=240)
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    """ISO weekdays (1 = Monday) on which the lesson is held."""

    @field_validator("start", mode="before")
    @classmethod
    def _start_time(cls, value: Any) -> Any:
        return _time_of_day(value)


class ViewConfig(_Model):
    layout: LayoutKind
    featured: SourceSelector | None = None
    """Source shown large (``speaker`` layout)."""
    tiles: SourceSelector = "receiving"
    """Sources shown as tiles."""
    shown_to: SourceSelector
    """Which classrooms receive this view."""
    record: bool = False
    """Whether this view is the one archived (同步录播)."""

    @model_validator(mode="after")
    def _speaker_needs_featured(self) -> ViewConfig:
        if self.layout == "speaker" and self.featured is None:
            raise ValueError("a 'speaker' layout needs 'featured': the source shown large, "
                             "main or receiving (e.g. featured: main)")
        return self


class AdaptationConfig(_Model):
    """Video adaptation to thin links (see :mod:`syncclass.adapt`)."""

    enabled: bool = True
    """Agents follow their uplink's estimate (bitrate, then size, then frame rate) and the
    mixer serves a lower rendition of a view to classrooms whose downlink needs it. Behind
    a capped link this keeps video moving where none gets through without it
    (``benchmarks/uplink.py``: 0-1.3 fps without, ~15 fps with, at 512 and 1024 kbit/s);
    on a clean link it changes nothing. Known limits: aiortc's receive-side estimate lets
    the video fill a thin link's queue (round trips of 180-420 ms on a 384 kbit/s link
    with 20 ms of delay), so there the picture stalls and catches up in bursts, and the
    first seconds after joining a thin link freeze. ``false`` sends every stream at its
    configured bitrate whatever the link."""
    min_bitrate_kbps: int = Field(default=100, ge=30, le=5000)
    """No stream is adapted below this, kbit/s."""
    low_rendition: bool = True
    """Whether the mixer may encode a second, lower rendition of a view (one more encode
    per view while any classroom needs it)."""
    estimator: Literal["gcc", "remb"] = "remb"
    """``gcc``: every stream's sender estimates its link from transport-wide feedback
    (delay- and loss-based, :mod:`syncclass.gcc`; negotiated with every peer, Chromium
    included; a peer without it keeps ``remb``). ``remb``: the receiver's REMB and
    receiver-report loss (aiortc's receive-side estimate)."""
    start_kbps: int = Field(default=300, ge=50, le=5000)
    """With ``gcc``: where each stream's estimate starts before any feedback, kbit/s
    (libwebrtc's 300); its fast start grows 1.5x per 0.5 s until congestion."""


_RULES = DirectingRules()


class DirectingConfig(_Model):
    """Timing of automatic directing (自动导播, :mod:`syncclass.directing`), seconds;
    the defaults are those of :class:`~syncclass.directing.DirectingRules`."""

    onset_s: float = Field(default=_RULES.onset_s, ge=0.3, le=10)
    """A receiving classroom speaking this long while the teacher is silent is featured."""
    release_s: float = Field(default=_RULES.release_s, ge=0.3, le=30)
    """A featured classroom silent this long (from its last voiced frame) hands the
    picture back to the teacher. Shorter returns sooner after an answer; a pause inside
    an answer longer than this cuts to the teacher for at least ``min_hold_s``."""
    min_hold_s: float = Field(default=_RULES.min_hold_s, ge=0, le=60)
    """No automatic switch sooner than this after the previous one (no flicker)."""
    pause_s: float = Field(default=_RULES.pause_s, ge=0, le=5)
    """A pause shorter than this does not end a speech stretch."""
    takeback_s: float = Field(default=_RULES.takeback_s, ge=0, le=10)
    """The teacher speaking this long while the featured classroom is silent brings the
    picture back to the teacher before ``release_s``."""

    @model_validator(mode="after")
    def _release_covers_pauses(self) -> DirectingConfig:
        if self.release_s < self.pause_s:
            raise ValueError(f"release_s ({self.release_s} s) must be at least pause_s "
                             f"({self.pause_s} s): a pause inside a speech stretch must not "
                             "end its classroom's shot")
        return self


class MediaConfig(_Model):
    width: int = Field(default=1280, ge=160, le=3840, multiple_of=2)
    height: int = Field(default=720, ge=90, le=2160, multiple_of=2)
    fps: float = Field(default=15.0, gt=0, le=60)
    bitrate_kbps: int = Field(default=2500, ge=100, le=20000)
    """Bitrate of each composed view sent to classrooms."""
    uplink_bitrate_kbps: int = Field(default=1500, ge=100, le=20000)
    """Bitrate of each classroom's camera sent to the mixer (rural uplinks are thin)."""
    keyframe_interval_s: float = Field(default=2.0, gt=0, le=60)
    """Periodic keyframe interval of each view's encoder."""
    keyframe_min_interval_s: float = Field(default=0.5, ge=0, le=10)
    """Keyframe requests (PLI/FIR) closer together than this are merged."""
    freeze_timeout_s: float = Field(default=1.5, gt=0, le=30)
    """A feed with no new frame for this long is shown as frozen."""
    sample_rate: Literal[48000] = 48000
    audio_frame_ms: Literal[20] = 20
    audio_bitrate_kbps: int = Field(default=32, ge=8, le=256)
    """Opus bitrate of every audio stream sent over WebRTC (each classroom's microphone,
    each classroom's mix). aiortc's own is 96 kbit/s, a quarter of a 384 kbit/s rural link;
    32 kbit/s is libwebrtc's default for speech."""
    adaptation: AdaptationConfig = AdaptationConfig()
    """Adapting video to thin links."""
    directing: DirectingConfig = DirectingConfig()
    """Automatic directing of the students' view and the recording."""


class TokenKeyConfig(_Model):
    """A county key signing classroom tokens (see :mod:`syncclass.tokens`)."""

    id: Identifier
    secret: str = Field(min_length=32, repr=False)
    """HMAC key; at least 32 characters (e.g. ``python -c "import secrets;
    print(secrets.token_urlsafe(32))"``). Never logged."""


class TlsConfig(_Model):
    cert: str = path_field("file", ...)
    """PEM certificate chain of the mixer."""
    key: str = path_field("file", ...)
    """PEM private key of the certificate."""


class ClusterNodeConfig(_Model):
    """One mixer node of a county with several (see :class:`ClusterConfig`)."""

    id: Identifier
    """The node's name in Redis, on the dashboard and in ``/metrics``."""
    url: str = worded_pattern(r"^https?://[^/?#\s]+$", "use http://HOST:PORT or "
                              "https://HOST:PORT (no path), e.g. 'http://10.0.0.11:8700'")
    """Base URL classrooms and browsers reach this node at (``http(s)://host:port``). A
    ``redirect`` is followed only to a URL listed here."""
    recorder_endpoint: str | None = None
    """ZeroMQ endpoint this node publishes the recording on (``None``: ``recorder.endpoint``);
    recorders subscribe to every node's."""


class ClusterConfig(_Model):
    """Several mixer nodes (LiveKit-style): each pairing's lessons pinned to one node through
    Redis (node registry, load, leases); classrooms that contact another node are
    redirected; a dead node's live lessons are resumed by a survivor."""

    redis_url: SecretStr
    """``redis://[:password@]host:port/db`` (or ``rediss://``); shown redacted."""
    nodes: list[ClusterNodeConfig] = Field(min_length=1)
    """Every node of the county: agents try them in turn; redirects go only to these."""
    node_id: Identifier | None = None
    """This process's node (``syncclass mixer --node-id`` overrides); one of ``nodes``."""
    heartbeat_s: float = Field(default=1.0, ge=0.1, le=30)
    """How often a node writes its registry entry and renews its lessons' leases, s."""
    lease_ttl_s: float = Field(default=3.0, ge=0.3, le=120)
    """A node silent this long (s) is dead: its entry and leases expire and a survivor
    takes its live lessons. At least twice ``heartbeat_s``."""
    key_prefix: Identifier = "syncclass"
    """Prefix of every Redis key (several counties may share one Redis)."""
    checkpoint_s: float = Field(default=2.0, ge=0.1, le=60)
    """How often (s, with the heartbeat) a node writes each live lesson's analytics to
    Redis, for the survivor that resumes the lesson if the node dies: a fail-over loses
    the analytics of at most this long before the node's last checkpoint."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://[:password@]host:port/db, rediss://... or unix://PATH")
        return v

    @model_validator(mode="after")
    def _nodes_fit(self) -> ClusterConfig:
        _unique("nodes", [n.id for n in self.nodes])
        _unique("nodes", [n.url.rstrip("/") for n in self.nodes], what="url")
        if self.node_id is not None and self.node_id not in {n.id for n in self.nodes}:
            raise ValueError(f"node_id {self.node_id!r} is not one of 'nodes' "
                             f"({', '.join(n.id for n in self.nodes)})")
        if self.lease_ttl_s < 2 * self.heartbeat_s:
            raise ValueError(f"lease_ttl_s ({self.lease_ttl_s:g}) must be at least twice "
                             f"heartbeat_s ({self.heartbeat_s:g}): one late heartbeat must "
                             "not give a live node's lessons away")
        return self

    def node(self, node_id: str) -> ClusterNodeConfig:
        """The node named ``node_id`` (KeyError if none)."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def vouches_for(self, url: str) -> bool:
        """Whether ``url`` is one of the county's nodes (a redirect may go there)."""
        return url.rstrip("/") in {n.url.rstrip("/") for n in self.nodes}


class TurnConfig(_Model):
    """TURN relays for classrooms behind NAT or a firewall (coturn with a REST-API shared
    secret, ``scripts/turnserver.sh``). The mixer hands each classroom time-limited
    credentials in its ``welcome``; the secret itself never leaves the servers."""

    urls: list[str] = Field(min_length=1)
    """TURN URLs in order of preference, e.g. ``turn:turn.example.org:3478?transport=udp``,
    ``turn:turn.example.org:3478?transport=tcp``, ``turns:turn.example.org:443?transport=tcp``.
    Browsers try them all; an agent (aiortc uses one TURN server) probes them and uses the
    first that answers."""
    secret: SecretStr = Field(min_length=16)
    """coturn's ``static-auth-secret`` (shown as ``**********`` in logs and reprs)."""
    credential_lifetime_s: int = Field(default=86_400, ge=600, le=7 * 86_400)
    """How long a handed-out credential works, s. coturn ends a relay when its credential
    expires, so this must outlast a lesson; an agent reconnects for fresh credentials
    before it joins a lesson with less than an hour of them left."""
    ca_file: str | None = None
    """CA certificate(s) (PEM) agents trust for a ``turns:`` server's certificate (e.g. the
    self-signed one ``scripts/turnserver.sh`` makes); ``None``: the system trust store."""

    @field_validator("urls")
    @classmethod
    def _valid_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            TurnUrl.parse(url)  # ValueError names the bad URL
        return urls


class MixerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    url: str = "http://127.0.0.1:8700"
    """Base URL agents use to reach the mixer."""
    ice_host_addresses: list[str] | None = None
    """Host addresses to offer as ICE candidates; ``None`` lets aioice enumerate
    interfaces (which never offers 127.0.0.1). Set to ``[127.0.0.1]`` for one machine."""
    ice_advertised_addresses: dict[IPvAnyAddress, IPvAnyAddress] = {}
    """Host address -> address written in the mixer's ICE candidates instead, for a mixer
    behind a 1:1 NAT (a cloud VM's private address -> its public one). Ports are kept."""
    turn: TurnConfig | None = None
    """TURN relays handed to classrooms (``None``: host candidates only)."""
    max_message_bytes: int = Field(default=65536, ge=1024)
    """Signaling messages larger than this are refused."""
    data_dir: str = path_field("out_dir", "var/mixer")
    """Where the mixer keeps state and outputs (``lessons.json``: live lessons, so a
    restarted mixer resumes them)."""
    token_keys: list[TokenKeyConfig] = []
    """County signing keys of classroom tokens (``syncclass token issue``). The first signs,
    all verify (rotation: put the new key first, re-issue, then drop the old one)."""
    allow_static_tokens: bool = True
    """Also accept each classroom's static ``token`` from this file (demo and tests; set
    false once every classroom has a signed, expiring token)."""
    tls: TlsConfig | None = None
    """Serve signaling, the join page and the dashboard over HTTPS/WSS."""
    ca_file: str | None = path_field("file")
    """CA certificate(s) agents trust for the mixer's TLS certificate (PEM); ``None``: the
    system trust store."""
    heartbeat_s: float = Field(default=4.0, ge=1, le=60)
    """WebSocket ping interval, s: a classroom whose link died is noticed (and marked
    absent) about 1.5 × this later; agents ping at twice this interval (so they wait
    this long for an answer before reconnecting)."""
    ice_consent_interval_s: float = Field(default=1.0, ge=0.2, le=10)
    """ICE consent freshness check interval (RFC 7675; aioice's default is 5 s)."""
    ice_consent_failures: int = Field(default=10, ge=2, le=30)
    """Consecutive failed consent checks after which a peer is closed (aioice: 6). Each
    check waits 0.5 s for its answer, so on a thin link whose queue holds ~0.5 s (the
    first seconds before the sender adapts) checks fail in a row: 5 closed a 512 kbit/s
    classroom ~7 s after it joined (``benchmarks/uplink.py``); 10 give ~11-17 s. A PC
    that vanishes is noticed sooner by the signaling heartbeat (``heartbeat_s``)."""
    auth_failures_per_min: float = Field(default=10.0, gt=0)
    """Failed hellos/credentials allowed per remote address per minute (burst the same)."""
    joins_per_min: float = Field(default=30.0, gt=0)
    """Hellos and offers allowed per classroom (and per observer) per minute (burst the
    same)."""
    lesson_actions_per_min: float = Field(default=12.0, gt=0)
    """Lesson starts and ends allowed per main classroom per minute (burst the same): each
    start builds a media pipeline."""
    pings_per_min: float = Field(default=60.0, gt=0)
    """``ping`` messages answered per connection per minute (burst the same); agents ping
    every ``2 × heartbeat_s``. Beyond it pings are dropped, unanswered."""
    comments_per_min: float = Field(default=20.0, gt=0)
    """Comments an observer may write per minute (burst the same)."""
    max_errors_before_hello: int = Field(default=5, ge=1, le=100)
    """Refused messages a signaling socket may send before its ``hello``; the next one
    closes it (code 4400)."""
    header_timeout_s: float = Field(default=10.0, ge=0.5, le=300)
    """An HTTP request's line and headers must arrive within this many seconds of the
    connection opening (or of the first byte of a keep-alive request); slower clients
    (slow-loris) are disconnected."""
    max_connections_per_client: int = Field(default=128, ge=1, le=100_000)
    """Open TCP connections allowed per client address (agents, pages, dashboard viewers
    of one school share its NAT address); more are refused with 503."""
    hello_timeout_s: float = Field(default=10.0, ge=0.5, le=300)
    """A signaling WebSocket must send its ``hello`` (or ``observer_hello``) within this
    many seconds; otherwise it gets an ``auth_timeout`` error and is closed (code 4408)."""
    send_timeout_s: float = Field(default=5.0, ge=0.1, le=120)
    """A message to a WebSocket that does not read (its buffers full) is given up after
    this many seconds and the connection is dropped; others are never held up by it."""
    workers: int | Literal["auto"] = 0
    """Media worker processes of this node (issue 20): each lesson runs in one of them
    (peers, decode, compose, encode, analytics, recording publisher) while this process
    keeps the signaling/HTTP front; ``"auto"``: one per core; ``0``: everything in one
    process (the in-process app of the tests). With ``cluster`` every node runs this many
    (a number: recorders subscribe to each worker of every node)."""

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and 0 <= value <= 64):
            return value
        raise ValueError(f"{value!r} is not a number of worker processes: use 0 (one "
                         "process), 1-64, or 'auto' (one per core)")
    cluster: ClusterConfig | None = None
    """Several nodes placed through Redis (``None``: one node, in-process lessons)."""

    @model_validator(mode="after")
    def _cluster_workers_fixed(self) -> MixerConfig:
        # Recorders subscribe to every worker endpoint of every node (workers.py derives
        # them from the count): "auto" would make that count each node's core count, which
        # a recorder on another host cannot know.
        if self.cluster is not None and self.workers == "auto":
            raise ValueError("mixer.cluster: give mixer.workers as a number (0: lessons in "
                             "the node process, 1-64: media workers per node), not 'auto': "
                             "recorders subscribe to each worker of every node, so every "
                             "node must run the same known number")
        return self


class S3ArchiveConfig(_Model):
    """S3-compatible object storage for finished lessons."""

    endpoint_url: str | None = None
    """e.g. ``http://127.0.0.1:9000``; ``None``: AWS's default endpoint."""
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = "lessons/"
    """Key prefix; objects are ``{prefix}{lesson_id}/lesson.mp4`` etc."""
    region: str = "us-east-1"
    access_key_id: str | None = Field(default=None, repr=False)
    """``None``: boto3's usual credential chain (environment, files, instance role)."""
    secret_access_key: str | None = Field(default=None, repr=False)
    part_size_mb: int = Field(default=8, ge=5, le=512)
    """Multipart upload part size in MiB (S3's minimum is 5)."""
    create_bucket: bool = False
    """Create the bucket if it does not exist (test and single-site servers)."""
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    """Connect/read timeout of one request, in seconds."""


Z85_KEY_PATTERN = r"^[0-9a-zA-Z.:+=^!/*?&<>()\[\]{}@%$#-]{40}$"
"""A 32-byte CURVE key in Z85 text (40 characters), as ``syncclass recorder-keys`` prints."""
Z85Key = Annotated[str, worded_pattern(
    Z85_KEY_PATTERN,
    "use a CURVE key of 40 Z85 characters as 'syncclass recorder-keys' prints it, e.g. "
    "'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'")]


def _z85_key(text: str, where: str, shown: bool = True) -> bytes:
    """The 32 bytes of a Z85 CURVE key; ``ValueError`` naming ``where`` if it is none."""
    from zmq.utils import z85  # text codec only (no sockets)

    shown_text = repr(text) if shown else "(hidden)"
    if re.fullmatch(Z85_KEY_PATTERN, text) is None:
        raise ValueError(f"{where}: {shown_text} is not a Z85 CURVE key (40 characters)")
    try:
        return bytes(z85.decode(text.encode()))
    except Exception:  # struct.error: a group of 5 characters beyond 2**32
        raise ValueError(f"{where}: {shown_text} is not a Z85 CURVE key") from None


def _public_of(secret: SecretStr, where: str) -> str:
    """The public key (Z85) of a secret CURVE key."""
    import zmq  # CURVE key arithmetic only (no sockets)

    text = secret.get_secret_value()
    _z85_key(text, where, shown=False)
    try:
        return bytes(zmq.curve_public(text.encode())).decode()
    except zmq.ZMQError:
        raise ValueError(f"{where}: not a CURVE secret key (hidden)") from None


class RecorderKeyConfig(_Model):
    """A recorder allowed on the mixer's bus."""

    name: Identifier
    """Shown on the dashboard and in ``/api/recorder``; recorders are counted by it."""
    public_key: Z85Key
    """The recorder's CURVE public key (Z85)."""


class CurveConfig(_Model):
    """ZeroMQ CURVE keys of the recorder bus: the mixer is the CURVE server, each recorder a
    client whose public key must be listed in ``recorders``. One file may carry every key
    (one machine); on separate hosts the mixer's file needs ``mixer_secret_key`` and
    ``recorders``, a recorder's file ``mixer_public_key`` and ``recorder_secret_key``."""

    mixer_public_key: Z85Key
    """The mixer's public key: recorders only talk to the mixer holding its secret."""
    mixer_secret_key: SecretStr | None = None
    """The mixer's secret key (mixer host only; never shown)."""
    recorders: list[RecorderKeyConfig] = []
    """Recorders the mixer accepts (by public key); any other peer fails the handshake."""
    recorder_secret_key: SecretStr | None = None
    """This recorder's secret key (recorder host only; never shown)."""

    @model_validator(mode="after")
    def _keys_fit(self) -> CurveConfig:
        _z85_key(self.mixer_public_key, "mixer_public_key")
        for i, r in enumerate(self.recorders):
            _z85_key(r.public_key, f"recorders[{i}].public_key")
        _unique("recorders", [r.name for r in self.recorders])
        _unique("recorders", [r.public_key for r in self.recorders], what="public_key")
        if self.mixer_secret_key is not None:
            if _public_of(self.mixer_secret_key, "mixer_secret_key") != self.mixer_public_key:
                raise ValueError("mixer_secret_key does not belong to mixer_public_key")
        if self.recorder_secret_key is not None:
            public = _public_of(self.recorder_secret_key, "recorder_secret_key")
            if self.recorders and public not in {r.public_key for r in self.recorders}:
                raise ValueError("recorder_secret_key belongs to none of 'recorders'")
        return self


def _loopback_endpoint(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint is reachable only from this machine (ipc, inproc, or tcp
    bound to a loopback address)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: maybe reachable from others


class RecorderConfig(_Model):
    """同步录播: how the mixer publishes the composed lesson and how it is archived."""

    enabled: bool = True
    """Whether the mixer publishes the recorded view (the one with ``record: true``)."""
    endpoint: str = "tcp://127.0.0.1:8710"
    """ZeroMQ endpoint the mixer binds and recorders connect to."""
    queue_size: int = Field(default=256, ge=8, le=100_000)
    """Messages buffered between the mixer's loop and a slow recorder (about 65 a second
    at 15 fps); beyond it messages are dropped and counted, never waited for."""
    meta_interval_s: float = Field(default=1.0, gt=0, le=60)
    """Lesson metadata is re-sent this often, so a restarted recorder picks the lesson up."""
    replay_s: float = Field(default=10.0, ge=0, le=120)
    """The mixer keeps this much of each lesson's recent stream (about 3 MB at 2.5 Mbit/s)
    and replays it, from a keyframe, to a recorder that (re)connects: a recorder restart
    loses at most the rest of one GOP instead of its whole downtime."""
    out_dir: str = path_field("out_dir", "var/recorder")
    """Where the recorder writes segments and finished lessons."""
    segment_s: float = Field(default=2.0, ge=0.5, le=2.0)
    """Target segment length in seconds (segments start at keyframes)."""
    idle_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    """A live lesson with no message for this long (mixer gone) is finalised as
    interrupted, with what was written."""
    archive: Literal["local", "s3"] = "local"
    """Where finished lessons go: ``local`` (``archive_dir``) or ``s3``."""
    archive_dir: str = path_field("out_dir", "var/archive")
    spool_dir: str = path_field("out_dir", "var/recorder/spool")
    """Finished lessons wait here until the archive has them (survives restarts)."""
    retry_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between upload retries (exponential backoff from 1 s)."""
    s3: S3ArchiveConfig | None = None
    curve: CurveConfig | None = None
    """CURVE keys of the bus (``syncclass recorder-keys``). Required unless ``endpoint`` is
    ``ipc://`` or loopback ``tcp://``: without keys any process that reaches the endpoint
    could read the lesson's media and forge recorder reports."""

    @model_validator(mode="after")
    def _s3_needs_settings(self) -> RecorderConfig:
        if self.archive == "s3" and self.s3 is None:
            raise ValueError("archive 's3' needs an 's3' section (bucket, endpoint_url, ...)")
        problem = self.bus_problem()
        if problem is not None:
            raise ValueError(problem)
        return self

    def bus_problem(self) -> str | None:
        """Why the bus must not run as configured (an endpoint other hosts may reach without
        CURVE keys), else ``None``. Checked at load and again by the mixer and recorder at
        start (command-line overrides change ``endpoint``)."""
        if self.curve is None and not _loopback_endpoint(self.endpoint):
            return (f"recorder.endpoint {self.endpoint!r} is reachable from other hosts but "
                    "recorder.curve is not set: any process could read the lessons and forge "
                    "recorder reports. Make keys with 'syncclass recorder-keys' and add them, "
                    "or use a loopback (tcp://127.0.0.1:...) or ipc:// endpoint")
        return None


class OpsUserConfig(_Model):
    name: Identifier
    password_hash: str = Field(repr=False)
    """``scrypt$...`` string from ``syncclass hash-password`` (never a plain password)."""

    @model_validator(mode="after")
    def _hashed(self) -> OpsUserConfig:
        check_password_hash_format(self.password_hash)
        return self


class OpsThresholds(_Model):
    """When a classroom is shown amber/red and alerted (defaults: ITU-T G.114 one-way delay)."""

    latency_amber_ms: float = Field(default=150.0, gt=0)
    """Glass-to-glass latency above this is amber (G.114: acceptable up to 150 ms)."""
    latency_red_ms: float = Field(default=400.0, gt=0)
    """Above this is red (G.114: unacceptable for general planning above 400 ms)."""
    loss_percent: float = Field(default=1.0, ge=0, le=100)
    """Packet loss above this (either direction) is red."""
    jitter_ms: float = Field(default=50.0, gt=0)
    """Interarrival jitter above this is amber (shown, not alerted)."""
    min_fps: float = Field(default=8.0, ge=0)
    """Camera frames reaching the mixer below this rate is amber (shown, not alerted)."""


class WebhookConfig(_Model):
    url: str = worded_pattern(r"^https?://", "give an http:// or https:// address, e.g. "
                              "'https://ops.example.edu.cn/hooks/syncclass'", quote_value=False)
    secret: str = Field(min_length=16, repr=False)
    """HMAC-SHA256 key of the ``X-Syncclass-Signature`` header."""
    events: list[str] = ["alert"]
    """Event names to deliver (``*``: all), e.g. alert, recording_ready, report_ready."""
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=6, ge=1, le=20)
    """Attempts per event (backoff 0.5 s, 1 s, 2 s, ... capped at 30 s) before it is dropped."""
    queue_size: int = Field(default=1000, ge=1)
    """Undelivered events kept; when full the oldest is dropped (and counted)."""


class OpsConfig(_Model):
    """Ops dashboard, metrics, alerts and webhooks."""

    users: list[OpsUserConfig] = []
    """Who may log in to ``/dashboard``. None: the dashboard refuses every login."""
    session_secret: str | None = Field(default=None, min_length=16, repr=False)
    """Key signing session cookies; unset: a random one per mixer start (logins then end
    when the mixer restarts)."""
    session_lifetime_s: int = Field(default=8 * 3600, ge=60)
    login_max_failures: int = Field(default=5, ge=1)
    """Failed logins allowed per client address and per user name within a minute."""
    sample_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    """How often classroom health is sampled (network stats, rates, alerts)."""
    history_s: float = Field(default=300.0, ge=10, le=3600)
    """How much health history is kept per classroom (dashboard charts)."""
    freeze_gap_ms: float = Field(default=500.0, gt=0)
    """A gap between received camera frames longer than this counts as a freeze."""
    thresholds: OpsThresholds = OpsThresholds()
    alert_hold_s: float = Field(default=10.0, ge=0)
    """A classroom must stay over a threshold (or out of its live lesson) this long before
    an alert is raised."""
    metrics_token: str | None = Field(default=None, min_length=16, repr=False)
    """If set, ``/metrics`` requires ``Authorization: Bearer <token>`` (or the
    ``api_token``, or a dashboard session); unset: only loopback clients may scrape."""
    api_token: str | None = Field(default=None, min_length=16, repr=False)
    """Bearer token for ops tools and scripts: reads every lesson on ``/api/lessons``,
    ``/api/stats``, ``/api/recorder``, ``/api/observers``, ``/metrics`` and reports.
    The ``SYNCCLASS_OPS_API_TOKEN`` environment variable of ``syncclass mixer`` sets it
    too (``LocalDeployment`` passes a fresh one that way)."""
    webhooks: list[WebhookConfig] = []


class MediaServerConfig(_Model):
    """``syncclass media-server``: live HLS and replay for people outside the lesson (直播 /
    点播), served from the recorder's folders and the archive, never by the mixer."""

    host: str = "127.0.0.1"
    port: int = Field(default=8720, ge=0, le=65535)
    url: str = "http://127.0.0.1:8720"
    """Public base URL (share links printed by ``syncclass share`` start with it)."""
    live_dir: str | None = path_field("out_dir")
    """The recorder's lesson folders (default: ``recorder.out_dir``)."""
    data_dir: str = path_field("out_dir", "var/media")
    """The media server's own files: the log of views (``views.jsonl``), publication state
    and comments added while replaying (``media.db``)."""
    mixer_data_dir: str | None = path_field("out_dir")
    """The mixer's data folder, for lesson reports and live comments (default:
    ``mixer.data_dir``; on another host: a shared folder)."""
    retention_days: float | None = Field(default=None, gt=0)
    """Archived lessons older than this are deleted (video, metadata, poster, report,
    replay comments); none: kept."""
    share_secret: str | None = Field(default=None, min_length=32, repr=False)
    """HMAC key of share links for public lessons (名师课堂); none: no share links."""
    share_max_s: int = Field(default=7 * 86400, ge=60, le=366 * 86400)
    """Longest validity of a share link (seconds)."""
    grant_lifetime_s: int = Field(default=4 * 3600, ge=60, le=7 * 86400)
    """A watch page opened with a credential gets a cookie valid this long (seconds)."""
    auth_failures_per_min: float = Field(default=10.0, gt=0)
    """Wrong credentials and share links allowed per remote address per minute (burst the
    same); beyond it that address gets 429 for every credential, the right one included,
    until its allowance refills (no guessing oracle)."""


class TermTargetsConfig(_Model):
    """What the bureau expects of each paired school per term (学期)."""

    min_subjects: int = Field(default=2, ge=0)
    """Distinct subjects taught synchronously per pairing."""
    min_lessons_per_subject: int = Field(default=10, ge=0)
    """Synchronous lessons held per subject."""
    min_attendance_ratio: float = Field(default=0.8, ge=0, le=1)
    """Mean attendance ratio of the receiving classrooms."""


class AnalyticsConfig(_Model):
    """伴随式大数据: attendance, speech, S-T analysis, reports and their database."""

    enabled: bool = True
    st_interval_s: float = Field(default=30.0, gt=0, le=600)
    """S-T sampling interval, s (the method's classic value is 30 s)."""
    vad_aggressiveness: int = Field(default=2, ge=0, le=3)
    """WebRTC VAD mode: 0 (least) .. 3 (most aggressive in rejecting non-speech)."""
    vad_hangover_ms: int = Field(default=300, ge=0, le=5000)
    """Pauses shorter than this stay inside one speech segment, ms."""
    turn_gap_s: float = Field(default=1.5, ge=0, le=60)
    """Pauses shorter than this stay inside one speaking turn, s."""
    exchange_window_s: float = Field(default=3.0, gt=0, le=60)
    """A receiving site starting to speak within this many seconds after the main site
    stopped counts as an exchange."""
    head_count_interval_s: float = Field(default=10.0, ge=0, le=600)
    """How often each classroom camera is sampled for a head count, s (0 disables)."""
    head_count_cascade: str | None = path_field("file")
    """Haar cascade XML for faces (default: the one Debian's ``opencv-data`` installs)."""
    network_interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often network quality is sampled per classroom, s."""
    database_url: str | None = Field(default=None, repr=False)
    """``sqlite:///path`` or ``postgresql://...``; default ``sqlite:///<data_dir>/analytics.db``."""
    term_start: dt.date | None = None
    """First day of the current term (``syncclass report`` default range)."""
    term_end: dt.date | None = None
    targets: TermTargetsConfig = TermTargetsConfig()


class CountyConfig(_Model):
    county: str
    mixer: MixerConfig = MixerConfig()
    media: MediaConfig = MediaConfig()
    recorder: RecorderConfig = RecorderConfig()
    ops: OpsConfig = OpsConfig()
    analytics: AnalyticsConfig = AnalyticsConfig()
    media_server: MediaServerConfig = MediaServerConfig()
    schools: list[SchoolConfig] = Field(min_length=1)
    classrooms: list[ClassroomConfig] = Field(min_length=1)
    pairings: list[PairingConfig] = Field(min_length=1)
    timetable: list[TimetableEntry] = []
    views: dict[ViewName, ViewConfig]
    observers: list[ObserverConfig] = []
    _relative_paths: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def relative_paths(self) -> dict[str, str]:
        """Paths written relative in the config file and resolved against its folder:
        field path (``mixer.data_dir``) -> the text as written."""
        return self._relative_paths

    @model_validator(mode="after")
    def _cross_references(self) -> CountyConfig:
        _unique("schools", [s.id for s in self.schools])
        _unique("classrooms", [c.id for c in self.classrooms])
        _unique("classrooms", [c.token for c in self.classrooms], what="token")
        _unique("pairings", [p.id for p in self.pairings])
        _unique("timetable", [t.id for t in self.timetable])
        schools = {s.id for s in self.schools}
        rooms = {c.id: c for c in self.classrooms}
        for i, c in enumerate(self.classrooms):
            if c.school not in schools:
                raise _ref_error(f"classrooms[{i}].school", c.school, "school")
        for i, p in enumerate(self.pairings):
            main = rooms.get(p.main)
            if main is None:
                raise _ref_error(f"pairings[{i}].main", p.main, "classroom")
            if main.role != "main":
                raise ValueError(f"pairings[{i}].main: classroom {p.main!r} has role {main.role!r}")
            for j, r in enumerate(p.receiving):
                room = rooms.get(r)
                if room is None:
                    raise _ref_error(f"pairings[{i}].receiving[{j}]", r, "classroom")
                if room.role != "receiving":
                    raise ValueError(
                        f"pairings[{i}].receiving[{j}]: classroom {r!r} has role {room.role!r}"
                    )
        pairings = {p.id for p in self.pairings}
        for i, t in enumerate(self.timetable):
            if t.pairing not in pairings:
                raise _ref_error(f"timetable[{i}].pairing", t.pairing, "pairing")
        _unique("observers", [o.id for o in self.observers])
        _unique("observers", [o.token for o in self.observers], what="token")
        room_tokens = {c.token for c in self.classrooms}
        for i, o in enumerate(self.observers):
            if o.token in room_tokens:
                raise ValueError(f"observers[{i}].token: duplicate token (hidden)")
            for j, pid in enumerate(o.pairings):
                if pid not in pairings:
                    raise _ref_error(f"observers[{i}].pairings[{j}]", pid, "pairing")
        if not any(v.record for v in self.views.values()) and self.views:
            pass  # recording is optional
        return self

    # -- lookups ---------------------------------------------------------------------------
    def classroom(self, classroom_id: str) -> ClassroomConfig:
        for c in self.classrooms:
            if c.id == classroom_id:
                return c
        raise KeyError(classroom_id)

    def school(self, school_id: str) -> SchoolConfig:
        for s in self.schools:
            if s.id == school_id:
                return s
        raise KeyError(school_id)

    def pairing(self, pairing_id: str) -> PairingConfig:
        for p in self.pairings:
            if p.id == pairing_id:
                return p
        raise KeyError(pairing_id)

    def observer(self, observer_id: str) -> ObserverConfig:
        for o in self.observers:
            if o.id == observer_id:
                return o
        raise KeyError(observer_id)

    def pairing_of_main(self, classroom_id: str) -> PairingConfig | None:
        return next((p for p in self.pairings if p.main == classroom_id), None)

    def classroom_number(self, classroom_id: str) -> int:
        """Small stable number of a classroom (its position in the config), burned into
        synthetic video timecodes (0-255)."""
        for i, c in enumerate(self.classrooms):
            if c.id == classroom_id:
                return i % 256
        raise KeyError(classroom_id)


_CLOCK_TEXT = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def _time_of_day(value: Any) -> Any:
    """A timetable time: ``"08:30"``, ``"8:30"`` or ``"8:30:00"`` (text), or a time.

    A number is refused with the fix: YAML 1.1 reads an unquoted ``9:00`` as the base-60
    number 540, which would silently become 00:09. :func:`load_config` reads such text as
    text, so only data parsed elsewhere (``yaml.safe_load``) or ``start: 540`` get here."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        n = int(value)
        if 0 <= n < 24 * 60:  # H:MM read in base 60
            hh, mm = divmod(n, 60)
            seen, guess = f"{hh}:{mm:02d} as {hh} x 60 + {mm} = {n}", f"{hh:02d}:{mm:02d}"
        elif 0 <= n < 24 * 3600:  # H:MM:SS read in base 60
            hh, mm, ss = n // 3600, n % 3600 // 60, n % 60
            seen = f"{hh}:{mm:02d}:{ss:02d} as {n}"
            guess = f"{hh:02d}:{mm:02d}" + (f":{ss:02d}" if ss else "")
        else:
            seen, guess = "9:00 as 540", "09:00"
        raise ValueError(
            f"{value!r} is a number, not a time of day (YAML 1.1 reads an unquoted "
            f'{seen}); write the time in quotes, e.g. start: "{guess}"')
    if isinstance(value, str):
        m = _CLOCK_TEXT.match(value)
        if m is None:
            raise ValueError(f'{value!r} is not a time of day; write HH:MM in quotes, '
                             f'e.g. start: "08:30"')
        h, mi, sec = int(m[1]), int(m[2]), int(m[3] or 0)
        if h > 23 or mi > 59 or sec > 59:
            raise ValueError(f"{value!r} is not a time of day (hours 0-23, minutes 0-59)")
        return dt.time(h, mi, sec)
    return value


def _path_fields(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, PathKind,
                                                                       BaseModel, str]]:
    """Every set path field under ``model``: (field path, value, kind, owner, name)."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{prefix}.{name}" if prefix else name
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "path_kind" in extra and isinstance(value, str):
            kind = _PATH_KINDS.get(str(extra["path_kind"]))
            if kind is not None:
                yield where, value, kind, model, name
        elif isinstance(value, BaseModel):
            yield from _path_fields(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _path_fields(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _path_fields(item, f"{where}.{key}")


def path_fields(config: CountyConfig) -> list[tuple[str, str, PathKind, BaseModel]]:
    """Every set path field of ``config``: (field path, value, kind, the model holding it);
    ``camera`` paths that are URLs (RTSP) are left out."""
    return [(where, value, kind, owner) for where, value, kind, owner, _ in
            _path_fields(config) if "://" not in value]


def _resolved(model: BaseModel, base: Path, prefix: str, found: dict[str, str]) -> BaseModel:
    update: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{prefix}.{name}" if prefix else name
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "path_kind" in extra and isinstance(value, str):
            if value and "://" not in value and not Path(value).expanduser().is_absolute():
                found[where] = value
                update[name] = str(base / value)
        elif isinstance(value, BaseModel):
            new = _resolved(value, base, where, found)
            if new is not value:
                update[name] = new
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            items = [_resolved(v, base, f"{where}[{i}]", found) if isinstance(v, BaseModel)
                     else v for i, v in enumerate(value)]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                update[name] = items
        elif isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
            items_d = {k: _resolved(v, base, f"{where}.{k}", found) if isinstance(v, BaseModel)
                       else v for k, v in value.items()}
            if any(items_d[k] is not value[k] for k in value):
                update[name] = items_d
    return model.model_copy(update=update) if update else model


def resolve_paths(config: CountyConfig, base: Path) -> CountyConfig:
    """``config`` with every relative path field (and a relative ``sqlite:///`` database
    URL) taken relative to ``base`` (the config file's folder), made absolute. What was
    relative is listed in the result's :attr:`CountyConfig.relative_paths`."""
    base = base.expanduser().resolve()
    found: dict[str, str] = {}
    out = _resolved(config, base, "", found)
    assert isinstance(out, CountyConfig)
    url = out.analytics.database_url
    if url and url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_absolute():
        found["analytics.database_url"] = url
        out = out.model_copy(update={"analytics": out.analytics.model_copy(update={
            "database_url": f"sqlite:///{base / url[len('sqlite:///'):]}"})})
    if out is config:
        out = config.model_copy()
    out._relative_paths = found
    return out


def _unique(section: str, values: list[str], what: str = "id") -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            shown = "(hidden)" if what == "token" else repr(v)
            raise ValueError(f"{section}[{i}].{what}: duplicate {what} {shown}")
        seen.add(v)


def _ref_error(path: str, value: str, kind: str) -> ValueError:
    return ValueError(f"{path}: unknown {kind} {value!r}")


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_config(data: Any, source: str = "<config>") -> CountyConfig:
    """Validate already-parsed YAML/JSON data; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return CountyConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
            msg = err["msg"]
            if err["type"] == "string_pattern_mismatch":
                msg = _pattern_words(err)
            elif err["type"] == "missing":
                doc = _field_doc(CountyConfig, loc)
                if doc:
                    msg = f"{msg}: {doc}"
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
                # Cross-reference errors carry their own path.
                if ": " in msg and not loc:
                    problems.append(f"{source}: {msg}")
                    continue
            problems.append(f"{source}: {_format_loc(loc)}: {msg}")
        raise ConfigError("\n".join(problems)) from None


def _field_doc(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The description (attribute docstring) of the field at ``loc``, on one line."""
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        nxt: Any = None
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        model = nxt
    if info is None or not info.description:
        return None
    return " ".join(info.description.split())


def _pattern_words(err: Any) -> str:
    """A pattern mismatch in words (:data:`PATTERN_WORDS`), never a raw regex alone."""
    pattern = str((err.get("ctx") or {}).get("pattern", ""))
    words, quote = PATTERN_WORDS.get(pattern, (None, False))
    value = err.get("input")
    shown = f"{value!r} is not allowed here" if quote and isinstance(value, str) \
        and len(value) <= 80 else "not allowed here"
    if words is None:
        return f"{shown}: it must have the form of the regular expression {pattern}"
    return f"{shown}: {words}"


class CountyLoader(yaml.SafeLoader):
    """YAML 1.1 as ``yaml.safe_load`` reads it, except that ``9:00`` stays the text
    ``"9:00"``: YAML 1.1 reads unquoted ``H:MM`` as a base-60 number (540), which a
    time field would take as 00:09. Nothing in a county config is a base-60 number."""


def _without_base60() -> None:
    int_rx = re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
    float_rx = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
    swap = {"tag:yaml.org,2002:int": int_rx, "tag:yaml.org,2002:float": float_rx}
    # Same resolvers in the same order, the two numeric ones without their base-60 form.
    CountyLoader.yaml_implicit_resolvers = {
        first: [(tag, swap.get(tag, rx)) for tag, rx in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


_without_base60()


def read_yaml(text: str) -> Any:
    """Parse a county config's YAML text (:class:`CountyLoader`)."""
    return yaml.load(text, Loader=CountyLoader)  # a SafeLoader subclass: safe


def load_config(path: str | Path) -> CountyConfig:
    """Read and validate a county config file. Relative paths in it are resolved against
    the file's folder (:func:`resolve_paths`), except in the embedded sample county
    (:func:`default_config_path`), whose paths stay relative to the current directory
    (the demo's ``var/...``, not the installed package's folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    config = parse_config(data, str(p))
    if p.resolve() == default_config_path().resolve():
        return config
    return resolve_paths(config, p.resolve().parent)


def default_config_path() -> Path:
    """The sample county shipped with the package (used when no --config is given)."""
    return Path(__file__).with_name("default_county.yaml")
