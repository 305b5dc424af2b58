"""Several mixer nodes: the node registry's records and the placement rule (pure, no I/O).

:mod:`mixer.cluster` keeps these in Redis: each node's :class:`NodeLoad` as a hash that
expires unless the node renews it (its heartbeat), each pairing's placement as a lease
(the node id, expiring likewise). This module only turns them into and out of Redis's
strings and picks the node a new lesson goes to.

A node with media workers (``mixer.workers``) has one process per worker beating for it:
each writes its own part of the node's hash (fields ``w{i}.lessons`` ...;
:func:`slot_fields`) and :func:`node_load_of` sums the live parts into the node's load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config import CountyConfig
from .workers import recorder_endpoints as worker_endpoints


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
    """The node's CPU use since its previous heartbeat, % of one core (with media workers
    the sum over the workers)."""
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


def slot_fields(load: NodeLoad, worker: int | None) -> dict[str, str]:
    """The node hash fields one process writes: a one-process node the plain fields,
    media worker ``i`` the same prefixed ``w{i}.`` (its siblings write theirs)."""
    prefix = "" if worker is None else f"w{worker}."
    return {prefix + k: v for k, v in load.to_fields().items()}


def slot_field_names(worker: int | None) -> list[str]:
    """The fields :func:`slot_fields` writes for ``worker`` (its clean stop deletes them)."""
    return list(slot_fields(NodeLoad("", "", 0, 0, 0.0, 0), worker))


def node_load_of(node_id: str, fields: Mapping[str, str], stale_ms: int) -> NodeLoad | None:
    """A node's load from its Redis hash: the sum over its processes' parts (the plain
    fields of a one-process node, each media worker's ``w{i}.`` fields) whose heartbeat is
    within ``stale_ms`` of the newest part's (one host, one clock): a worker that died
    and is not back yet counts no more. ``None`` for an empty hash; ``ValueError`` (from
    :meth:`NodeLoad.from_fields`) if a part is malformed."""
    slots: dict[str, dict[str, str]] = {}
    for key, value in fields.items():
        slot, _, name = key.rpartition(".")
        slots.setdefault(slot, {})[name] = value
    parts = [NodeLoad.from_fields(node_id, f) for _, f in sorted(slots.items())]
    if not parts:
        return None
    newest = max(parts, key=lambda p: p.heartbeat_ms)
    live = [p for p in parts if p.heartbeat_ms >= newest.heartbeat_ms - stale_ms]
    return NodeLoad(node_id=node_id, url=newest.url, lessons=sum(p.lessons for p in live),
                    sessions=sum(p.sessions for p in live),
                    cpu_percent=sum(p.cpu_percent for p in live),
                    heartbeat_ms=newest.heartbeat_ms,
                    lesson_ids=tuple(sorted({x for p in live for x in p.lesson_ids})))


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
    nodes each node's (``recorder_endpoint``, else ``recorder.endpoint``) and, with
    ``mixer.workers`` (a number with a cluster), each of its workers'
    (:func:`syncclass.workers.worker_endpoint`), once each. ``ValueError`` if a worker's
    endpoint cannot be derived."""
    cluster = config.mixer.cluster
    if cluster is None:
        return [config.recorder.endpoint]
    workers = config.mixer.workers
    count = workers if isinstance(workers, int) else 0  # 'auto' is refused with a cluster
    bases = dict.fromkeys(n.recorder_endpoint or config.recorder.endpoint for n in cluster.nodes)
    return list(dict.fromkeys(e for base in bases for e in worker_endpoints(base, count)))
