"""Signaling messages between classrooms and the mixer (JSON over WebSocket).

Every message is a JSON object with a ``type``. :func:`parse_client_message` validates
what a classroom sends and raises :class:`ProtocolError` (with a machine code and a
human message) for anything malformed; :func:`encode` serialises any message.

ICE: aiortc does not trickle candidates, so an ``offer`` carries a complete SDP (gathered
before sending) and the ``answer`` does too.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .errors import ProtocolError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_SDP_BYTES = 32_768
LessonStateName = Literal["idle", "live", "ended"]
ErrorCode = Literal[
    "bad_json",
    "bad_message",
    "unknown_type",
    "too_large",
    "auth_required",
    "auth_failed",
    "auth_timeout",
    "already_authenticated",
    "not_allowed",
    "not_paired",
    "no_lesson",
    "lesson_live",
    "bad_sdp",
    "rate_limited",
    "internal",
]


class _Msg(BaseModel):
    # NaN/Infinity have no JSON form: refused in every message, so no reply, page, metric
    # or report built from one can carry them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- classroom -> mixer ----------------------------------------------------------------------
class Hello(_Msg):
    """First message of a connection: who the classroom is and its credential."""

    type: Literal["hello"] = "hello"
    classroom_id: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=512)
    client: Literal["agent", "browser", "cli"] = "agent"
    protocol: int = PROTOCOL_VERSION


class ObserverHello(_Msg):
    """First message of an observer's (教研员) connection: who they are, their credential and
    which pairing's lesson they watch (default: the first one they may watch)."""

    type: Literal["observer_hello"] = "observer_hello"
    observer_id: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=512)
    pairing_id: str | None = Field(default=None, min_length=1, max_length=64)
    client: Literal["browser", "cli"] = "browser"
    protocol: int = PROTOCOL_VERSION


MAX_COMMENT_CHARS = 2000
"""Longest comment (评课 note) an observer may write, in characters."""


class Comment(_Msg):
    """An observer's time-stamped note on the live lesson; the mixer stamps the time."""

    type: Literal["comment"] = "comment"
    text: str = Field(min_length=1, max_length=MAX_COMMENT_CHARS)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("comment text is blank")
        return text


class StartLesson(_Msg):
    """The main classroom starts its lesson (optionally a given timetable entry)."""

    type: Literal["start_lesson"] = "start_lesson"
    timetable_id: str | None = Field(default=None, max_length=64)


class EndLesson(_Msg):
    type: Literal["end_lesson"] = "end_lesson"


class Offer(_Msg):
    """A complete SDP offer (ICE candidates already gathered)."""

    type: Literal["offer"] = "offer"
    sdp: str = Field(min_length=10, max_length=MAX_SDP_BYTES)


class Stats(_Msg):
    """Measurements a classroom reports about what it receives."""

    type: Literal["stats"] = "stats"
    frames_received: int = Field(ge=0)
    fps: float = Field(ge=0, le=1000)
    latency_ms: dict[str, float] = Field(default_factory=dict, max_length=64)
    """Median glass-to-glass latency per source classroom over the last window, ms."""
    reconnects: int = Field(default=0, ge=0)
    """Times the agent reconnected its signaling connection since it started."""


class Ping(_Msg):
    type: Literal["ping"] = "ping"
    id: int = 0


class Leave(_Msg):
    type: Literal["leave"] = "leave"


class RaiseHand(_Msg):
    """A receiving classroom raises its hand (举手): shown on the main classroom's screen."""

    type: Literal["raise_hand"] = "raise_hand"


class Direct(_Msg):
    """The main classroom's 导播 button: feature ``source`` in the students' view (a
    classroom id of the lesson, ``@courseware``), or give directing back (``auto``)."""

    type: Literal["direct"] = "direct"
    source: str = Field(min_length=1, max_length=64)


class ShareCourseware(_Msg):
    """The main classroom started (``on``) or stopped sharing its courseware (共享课件);
    its pictures come on the offer's second video track."""

    type: Literal["courseware"] = "courseware"
    on: bool


ClientMessage = Annotated[
    Hello | ObserverHello | StartLesson | EndLesson | Offer | Stats | Ping | Leave | Comment
    | RaiseHand | Direct | ShareCourseware,
    Field(discriminator="type"),
]
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
CLIENT_TYPES = frozenset(["hello", "start_lesson", "end_lesson", "offer", "stats", "ping", "leave",
                          "observer_hello", "comment", "raise_hand", "direct", "courseware"])


# -- mixer -> classroom ----------------------------------------------------------------------
class LessonInfo(_Msg):
    lesson_id: str
    state: LessonStateName
    pairing_id: str
    main: str
    receiving: list[str]
    subject: str
    grade: str
    teacher: str
    timetable_id: str | None = None
    started_ms: int | None = None
    """Epoch ms when the lesson started."""
    ended_ms: int | None = None


class IceServer(_Msg):
    """A TURN server for the classroom's peer connection (the shape of WebRTC's
    ``RTCIceServer``): time-limited credentials from the county's shared secret."""

    urls: list[str] = Field(min_length=1, max_length=8)
    username: str = Field(max_length=256)
    """``"<expiry unix s>:<classroom id>"`` (coturn REST-API scheme)."""
    credential: str = Field(max_length=256)


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    classroom_id: str
    classroom_number: int
    """Number burned into this classroom's synthetic timecodes."""
    role: Literal["main", "receiving"]
    name: str
    lesson: LessonInfo | None
    server_time_ms: int
    protocol: int = PROTOCOL_VERSION
    ice_servers: list[IceServer] = []
    """TURN relays to offer relay candidates through (empty: host candidates only)."""
    nodes: list[str] = Field(default=[], max_length=64)
    """Several nodes (``mixer.cluster``): every node's URL, where a browser classroom goes
    when its node stops answering (the survivor resumes its lesson); empty: one node."""


class ObserverWelcome(_Msg):
    """The mixer accepted an observer: the pairing they watch and its current lesson."""

    type: Literal["observer_welcome"] = "observer_welcome"
    observer_id: str
    name: str
    pairing_id: str
    view: str
    """The view the observer receives (``students_view``)."""
    lesson: LessonInfo | None
    server_time_ms: int
    protocol: int = PROTOCOL_VERSION
    ice_servers: list[IceServer] = []
    """TURN relays for the observer's browser (as in :class:`Welcome`)."""


class CommentRecord(_Msg):
    """A stored comment (also sent to the lesson's observers when it is added)."""

    type: Literal["comment_added"] = "comment_added"
    lesson_id: str
    pairing_id: str
    seq: int = Field(ge=1)
    """1, 2, ... per lesson, in the order the mixer stored them."""
    observer_id: str
    author: str
    text: str
    lesson_ms: int
    """Lesson-relative time: ms since the lesson started (lines up with its recording)."""
    epoch_ms: int
    """Wall-clock time the mixer received the comment, Unix epoch ms."""


class LessonState(_Msg):
    type: Literal["lesson_state"] = "lesson_state"
    lesson: LessonInfo


class Answer(_Msg):
    type: Literal["answer"] = "answer"
    sdp: str


class Placement(_Msg):
    classroom_id: str
    classroom_number: int
    label: str
    x: int
    y: int
    w: int
    h: int


class Layout(_Msg):
    """Where each source classroom appears in the view this classroom receives."""

    type: Literal["layout"] = "layout"
    view: str
    width: int
    height: int
    placements: list[Placement]


class Error(_Msg):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    ref: str | None = None
    """Type of the message that caused the error, when known."""


class Pong(_Msg):
    type: Literal["pong"] = "pong"
    id: int
    server_time_ms: int


class Redirect(_Msg):
    """This classroom's lesson is on another mixer node (several nodes, Redis): connect to
    ``url`` instead. The mixer closes the socket after sending it; a client follows it only
    to a node its county config lists (``mixer.cluster.nodes``)."""

    type: Literal["redirect"] = "redirect"
    url: str = Field(min_length=1, max_length=512)
    """Base URL of the node (``http(s)://host:port``)."""
    node_id: str = Field(min_length=1, max_length=64)


ServerMessage = Annotated[
    Welcome | ObserverWelcome | LessonState | Answer | Layout | Error | Pong | CommentRecord
    | Redirect,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads_strict(raw: str | bytes) -> Any:
    """``json.loads`` refusing ``NaN``/``Infinity`` and numbers that overflow to them
    (``ValueError``) and nesting deeper than Python's recursion limit (``RecursionError``)."""
    return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)


def finite_or_none(obj: Any) -> Any:
    """``obj`` (JSON-like: dicts, lists, tuples, scalars) with every NaN/Infinity float
    replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON text that any parser (a browser's, Prometheus', ...) accepts: ``json.dumps``
    with ``allow_nan=False``; should a NaN/Infinity still be in ``obj`` (they are refused
    at the protocol boundary), it is written as ``null`` and logged. Pass it as
    ``dumps=`` to ``web.json_response``."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):
            raise
        logger.warning("a non-finite number was about to be written as JSON; wrote null")
        return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def decode_object(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """A JSON object from a message or request body, else :class:`ProtocolError`
    (``too_large``, ``bad_json`` — also for NaN/Infinity and too deep nesting — or
    ``bad_message``)."""
    if len(raw) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(raw)} bytes exceeds {max_bytes}")
    try:
        data = loads_strict(raw)
    except RecursionError:
        raise ProtocolError("bad_json", "message is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    return data


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_client_message(raw: str | bytes, max_bytes: int = 65_536) -> ClientMessage:
    """Parse and validate a message from a classroom.

    Raises :class:`ProtocolError` with code ``too_large``, ``bad_json``, ``bad_message``
    or ``unknown_type``.
    """
    data = decode_object(raw, max_bytes)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "message has no string 'type'")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError("bad_message", f"invalid {kind!r}: {_describe(exc)}") from None


def parse_server_message(raw: str | bytes, max_bytes: int = 1_048_576) -> ServerMessage:
    """Parse a message from the mixer (used by agents and tests)."""
    data = decode_object(raw, max_bytes)
    try:
        return _server_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError("bad_message", f"invalid server message: {_describe(exc)}") from None


def encode(message: BaseModel) -> str:
    """Serialise a message to its JSON text."""
    return message.model_dump_json()
