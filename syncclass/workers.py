"""Media workers of one node, the pure part: how many, which lessons go where, and each
worker's recorder endpoint (issue 20). No I/O: :mod:`mixer.node` runs the processes.

A lesson's classrooms must all reach the worker that runs it, so placement is by
*pairing group*: pairings that share a classroom (a classroom in two pairings) form one
group, and a group lives on one worker while that worker lives (sticky); a new group goes
to the least-loaded live worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .config import CountyConfig, PairingConfig

MAX_WORKERS = 64
"""Upper bound of ``mixer.workers`` (one worker per core of a large server)."""


def resolve_workers(value: int | str, cpu_count: int | None = None) -> int:
    """Worker processes for ``mixer.workers``: a number as is, ``"auto"`` one per core
    (``cpu_count``, default :func:`os.cpu_count`), at most :data:`MAX_WORKERS`."""
    if value == "auto":
        cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return max(1, min(MAX_WORKERS, cores))
    return int(value)


_TCP = re.compile(r"^(tcp://.+:)(\d{1,5})$")


def worker_endpoint(endpoint: str, index: int) -> str:
    """The recorder endpoint worker ``index`` binds: worker 0 the configured one, worker
    ``i`` the configured TCP port + ``i`` (``tcp://127.0.0.1:5600`` -> ``...:5601``) or the
    configured ``ipc://`` path with ``-i`` appended. ``ValueError`` if none can be made."""
    if index == 0:
        return endpoint
    if endpoint.startswith("ipc://"):
        return f"{endpoint}-{index}"
    m = _TCP.match(endpoint)
    if m is None:
        raise ValueError(f"recorder endpoint {endpoint!r}: workers need a tcp://HOST:PORT or "
                         "ipc:// endpoint to derive one per worker")
    base = int(m.group(2))
    if base == 0:
        raise ValueError(f"recorder endpoint {endpoint!r}: give a fixed port for workers")
    port = base + index
    if port > 65535:
        raise ValueError(f"recorder endpoint {endpoint!r}: port + {index} is beyond 65535")
    return f"{m.group(1)}{port}"


def recorder_endpoints(endpoint: str, workers: int) -> list[str]:
    """Every endpoint a recorder connects to: one per worker (one with no workers)."""
    return [worker_endpoint(endpoint, i) for i in range(max(1, workers))]


def pairing_groups(pairings: Iterable[PairingConfig]) -> dict[str, str]:
    """Pairing id -> its group's id (the group's first pairing in config order); pairings
    sharing a classroom are in one group (union-find over classrooms)."""
    order = list(pairings)
    parent = {p.id: p.id for p in order}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, str] = {}
    for p in order:
        for cid in (p.main, *p.receiving):
            if cid in owner:
                a, b = find(owner[cid]), find(p.id)
                if a != b:  # the earlier pairing's root names the group
                    first = min(a, b, key=[q.id for q in order].index)
                    parent[a if first == b else b] = first
            else:
                owner[cid] = p.id
    return {p.id: find(p.id) for p in order}


def classroom_groups(config: CountyConfig) -> dict[str, str]:
    """Classroom id -> the group of the pairings it belongs to (unpaired: absent)."""
    groups = pairing_groups(config.pairings)
    return {cid: groups[p.id] for p in config.pairings for cid in (p.main, *p.receiving)}


@dataclass
class Placement:
    """Which worker runs each pairing group: sticky while the worker lives."""

    workers: int
    assigned: dict[str, int] = field(default_factory=dict)
    """Group id -> worker index."""

    def worker_for(self, group: str, alive: Mapping[int, bool]) -> int | None:
        """The worker of ``group``: the one it was placed on (even while that worker
        restarts: the lesson resumes there from its ``lessons.json``), else the live worker
        with the fewest groups (lowest index on a tie); ``None`` if no worker is alive."""
        current = self.assigned.get(group)
        if current is not None:
            return current
        live = [i for i in range(self.workers) if alive.get(i, False)]
        if not live:
            return None
        load = {i: 0 for i in live}
        for g, w in self.assigned.items():
            if w in load and g != group:
                load[w] += 1
        chosen = min(live, key=lambda i: (load[i], i))
        self.assigned[group] = chosen
        return chosen

    def pin(self, group: str, worker: int) -> None:
        """Record that ``worker`` runs ``group`` (a lesson it resumed after a restart)."""
        self.assigned[group] = worker

    def groups_of(self, worker: int) -> list[str]:
        return sorted(g for g, w in self.assigned.items() if w == worker)
