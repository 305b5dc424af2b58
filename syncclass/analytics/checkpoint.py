"""A live lesson's analytics as a compact, versioned JSON document (pure, no I/O).

With several mixer nodes (:mod:`mixer.cluster`) the node holding a lesson writes this
checkpoint to Redis with its heartbeat; when the node dies, the survivor that resumes the
lesson reads it back, so the report written at the lesson's end covers the lesson before
the fail-over too. Everything is on the epoch clock (ms), as in the report.

What the checkpoint cannot know (the last ``ts_ms`` up to the node's death) is the gap:
open attendance sessions are closed at ``ts_ms`` (reason ``node_lost``), an open speech
segment at its last voiced frame.

The document is bounded (``max_bytes``): network samples — the only part that grows with
every few seconds of every classroom — are thinned (every other one dropped, the last one
kept) until it fits; ``thinned`` counts the samples dropped so the report can say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CHECKPOINT_SCHEMA = "syncclass.analytics_checkpoint"
CHECKPOINT_VERSION = 1
MAX_CHECKPOINT_BYTES = 1 << 20
"""A checkpoint larger than this (bytes of UTF-8 JSON) is thinned, or refused when read."""
MAX_NETWORK_ROWS = 300
"""Network samples per classroom a checkpoint keeps at most (evenly spaced, the last one
kept): a 45-minute lesson has 1350 at the default 2 s interval, which would make the
document ~5 times larger and its encoding on the event loop as much slower."""
NETWORK_FIELDS = ("ts_ms", "rtt_ms", "jitter_ms", "loss_percent", "bitrate_kbps", "fps",
                  "freezes", "latency_ms")
"""A network sample's fields, in the order a checkpoint row lists them."""
LOST_REASON = "node_lost"
"""Why attendance sessions still open at the checkpoint ended (the node holding the
lesson stopped without a goodbye)."""

Number = int | float | None


@dataclass(frozen=True)
class Gap:
    """A stretch of a lesson the analytics did not see: from the last checkpoint of a node
    that died to the lesson's resumption on a survivor."""

    start_ms: int
    end_ms: int
    reason: str = LOST_REASON
    checkpoint: bool = True
    """Whether a checkpoint was restored (``False``: everything before ``end_ms`` is lost
    and ``start_ms`` is the lesson's start)."""

    def to_dict(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "end_ms": self.end_ms,
                "duration_s": round(max(0, self.end_ms - self.start_ms) / 1000, 3),
                "reason": self.reason, "checkpoint": self.checkpoint}


@dataclass
class AnalyticsCheckpoint:
    """One live lesson's analytics at ``ts_ms`` (epoch ms), per classroom id."""

    lesson_id: str
    ts_ms: int
    node_id: str = ""
    sessions: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    """Closed attendance sessions ``(join_ms, leave_ms, reason)``."""
    open: dict[str, int] = field(default_factory=dict)
    """Attendance sessions still open at ``ts_ms``: their join time."""
    speech: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Speech segments (an open one ends at its last voiced frame)."""
    hands: dict[str, list[int]] = field(default_factory=dict)
    heads: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    network: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Network samples (keys :data:`NETWORK_FIELDS`)."""
    contacts: dict[str, int] = field(default_factory=dict)
    directing: list[dict[str, Any]] = field(default_factory=list)
    """Directing switches, each with its epoch ``ts_ms``."""
    gaps: list[Gap] = field(default_factory=list)
    """Earlier fail-overs of this lesson."""
    thinned: int = 0
    """Network samples dropped so far to keep the document bounded."""

    def closed_sessions(self) -> dict[str, list[tuple[int, int, str]]]:
        """Every session, the open ones ended at ``ts_ms`` with reason ``node_lost``."""
        out = {cid: list(s) for cid, s in self.sessions.items()}
        for cid, join in self.open.items():
            out.setdefault(cid, []).append((join, max(join, self.ts_ms), LOST_REASON))
        return out

    def _doc(self, network: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        return {
            "schema": CHECKPOINT_SCHEMA, "version": CHECKPOINT_VERSION,
            "lesson_id": self.lesson_id, "ts_ms": self.ts_ms, "node_id": self.node_id,
            "sessions": {c: [list(x) for x in s] for c, s in self.sessions.items()},
            "open": dict(self.open),
            "speech": {c: [list(x) for x in s] for c, s in self.speech.items()},
            "hands": {c: list(h) for c, h in self.hands.items()},
            "heads": {c: [list(x) for x in h] for c, h in self.heads.items()},
            # Rows, not objects: the field names once instead of in every sample.
            "network": {c: [[s.get(k) for k in NETWORK_FIELDS] for s in rows]
                        for c, rows in network.items()},
            "contacts": dict(self.contacts),
            "directing": list(self.directing),
            "gaps": [{"start_ms": g.start_ms, "end_ms": g.end_ms, "reason": g.reason,
                      "checkpoint": g.checkpoint} for g in self.gaps],
            "thinned": self.thinned,
        }

    def to_json(self, max_bytes: int = MAX_CHECKPOINT_BYTES,
                max_network_rows: int = MAX_NETWORK_ROWS) -> str:
        """The document, at most ``max_bytes``, at most ``max_network_rows`` network
        samples per classroom: samples thinned to fit (and ``thinned`` counted).
        ``ValueError`` if even without them it is too large."""
        network = {c: _evenly(rows, max_network_rows) for c, rows in self.network.items()}
        thinned = self.thinned + sum(len(rows) - len(network[c])
                                     for c, rows in self.network.items())
        while True:
            text = json.dumps(self._doc(network) | {"thinned": thinned}, ensure_ascii=False,
                              separators=(",", ":"), allow_nan=False)
            size = len(text.encode())
            if size <= max_bytes:
                return text
            if not any(network.values()):
                raise ValueError(f"lesson {self.lesson_id}: analytics checkpoint of {size} "
                                 f"bytes exceeds {max_bytes} bytes without network samples")
            for c, rows in network.items():
                # Every other sample, the last one kept (the latest state of the link);
                # a lone sample goes too, so each round shrinks the document.
                kept = rows[-1::-2][::-1] if len(rows) > 1 else []
                thinned += len(rows) - len(kept)
                network[c] = kept

    @classmethod
    def parse(cls, text: str | bytes, max_bytes: int = MAX_CHECKPOINT_BYTES
              ) -> AnalyticsCheckpoint:
        """A checkpoint from its document; ``ValueError`` saying what is wrong (too
        large, not JSON, another schema or version, a field of the wrong type)."""
        raw = text.encode() if isinstance(text, str) else text
        if len(raw) > max_bytes:
            raise ValueError(f"analytics checkpoint of {len(raw)} bytes exceeds {max_bytes}")
        try:
            doc = _CheckpointDoc.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            raise ValueError(f"analytics checkpoint: {where}: {first['msg']}") from None
        for cid, rows in doc.sessions.items():
            for join, leave, _ in rows:
                if leave < join:
                    raise ValueError(f"analytics checkpoint: sessions.{cid}: leaves ({leave}) "
                                     f"before it joins ({join})")
        return cls(
            lesson_id=doc.lesson_id, ts_ms=doc.ts_ms, node_id=doc.node_id,
            sessions={c: [(a, b, r) for a, b, r in s] for c, s in doc.sessions.items()},
            open=dict(doc.open),
            speech={c: [(a, b) for a, b in s if b >= a] for c, s in doc.speech.items()},
            hands={c: list(h) for c, h in doc.hands.items()},
            heads={c: [(a, b) for a, b in h] for c, h in doc.heads.items()},
            network={c: [dict(zip(NETWORK_FIELDS, row, strict=True)) for row in rows]
                     for c, rows in doc.network.items()},
            contacts=dict(doc.contacts),
            directing=[d.model_dump() for d in doc.directing],
            gaps=[Gap(g.start_ms, g.end_ms, g.reason, g.checkpoint) for g in doc.gaps],
            thinned=doc.thinned)


def _evenly(rows: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most ``most`` of ``rows``, evenly spaced, ending with the last one."""
    if len(rows) <= most:
        return list(rows)
    step = -(-len(rows) // max(1, most))
    return rows[len(rows) - 1::-step][::-1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _GapDoc(_Strict):
    start_ms: int
    end_ms: int
    reason: str
    checkpoint: bool


class _SwitchDoc(BaseModel):
    """A directing switch: the fields the report reads are checked, others kept."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    ts_ms: int
    active: str
    courseware: bool


class _CheckpointDoc(_Strict):
    schema_: Literal["syncclass.analytics_checkpoint"] = Field(alias="schema")
    version: Literal[1]
    lesson_id: str
    ts_ms: int
    node_id: str
    sessions: dict[str, list[tuple[int, int, str]]]
    open: dict[str, int]
    speech: dict[str, list[tuple[int, int]]]
    hands: dict[str, list[int]]
    heads: dict[str, list[tuple[int, int]]]
    network: dict[str, list[tuple[int, Number, Number, Number, Number, Number, Number,
                                  Number]]]
    contacts: dict[str, int]
    directing: list[_SwitchDoc]
    gaps: list[_GapDoc]
    thinned: int = Field(ge=0)
