"""Several mixer nodes: the node registry's records and the placement rule (pure, no I/O).

:mod:`mixer.cluster` keeps these in Redis: each node's :class:`NodeLoad` as a hash that
expires unless the node renews it (its heartbeat), each pairing's placement as a lease
(the node id, expiring likewise). This module only turns them into and out of Redis's
strings and picks the node a new lesson goes to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config import CountyConfig


@dataclass(frozen=True)
class NodeLoad:
    """A node as its last heartbeat described it."""

    node_id: str
    url: str
    lessons: int
    """Live lessons on the node."""
    sessions: int
    """Classrooms connected to the node."""
    cpu_percent: float
    """The node process's CPU use since its previous heartbeat, % of one core."""
    heartbeat_ms: int
    """When the node wrote this (its clock), epoch ms."""
    lesson_ids: tuple[str, ...] = ()

    def to_fields(self) -> dict[str, str]:
        """The Redis hash fields."""
        return {"url": self.url, "lessons": str(self.lessons), "sessions": str(self.sessions),
                "cpu_percent": f"{self.cpu_percent:.1f}", "heartbeat_ms": str(self.heartbeat_ms),
                "lesson_ids": ",".join(self.lesson_ids)}

    @classmethod
    def from_fields(cls, node_id: str, fields: Mapping[str, str]) -> NodeLoad:
        """A record from the Redis hash; ``ValueError`` saying which field is wrong."""
        try:
            ids = fields.get("lesson_ids", "")
            return cls(node_id=node_id, url=fields["url"], lessons=int(fields["lessons"]),
                       sessions=int(fields["sessions"]),
                       cpu_percent=float(fields["cpu_percent"]),
                       heartbeat_ms=int(fields["heartbeat_ms"]),
                       lesson_ids=tuple(x for x in ids.split(",") if x))
        except KeyError as exc:
            raise ValueError(f"node {node_id!r}: registry entry lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise ValueError(f"node {node_id!r}: malformed registry entry: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        return {"node_id": self.node_id, "url": self.url, "lessons": self.lessons,
                "sessions": self.sessions, "cpu_percent": self.cpu_percent,
                "heartbeat_ms": self.heartbeat_ms, "lesson_ids": list(self.lesson_ids)}


def pick_node(live: Sequence[NodeLoad], here: str | None = None) -> NodeLoad | None:
    """The node a pairing not placed yet goes to: fewest live lessons (a lesson's media
    is what costs a node CPU and bandwidth); among those the node asked (``here``: no
    redirect hop), else fewest connected classrooms, least CPU, smallest id.
    ``None`` if no node is live."""
    if not live:
        return None
    return min(live, key=lambda n: (n.lessons, n.node_id != here, n.sessions, n.cpu_percent,
                                    n.node_id))


def pairing_of_classroom(config: CountyConfig, classroom_id: str) -> str | None:
    """The pairing a classroom belongs to (main or receiving); ``None`` if none."""
    for p in config.pairings:
        if classroom_id == p.main or classroom_id in p.receiving:
            return p.id
    return None


def recorder_endpoints(config: CountyConfig) -> list[str]:
    """The mixer endpoints a recorder subscribes to: ``recorder.endpoint``, or with several
    nodes each node's (``recorder_endpoint``, else ``recorder.endpoint``), once each."""
    cluster = config.mixer.cluster
    if cluster is None:
        return [config.recorder.endpoint]
    return list(dict.fromkeys(n.recorder_endpoint or config.recorder.endpoint
                              for n in cluster.nodes))
