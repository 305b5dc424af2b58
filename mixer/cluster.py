"""Several mixer nodes on Redis: node registry, lesson placement, fail-over (issue 20).

With ``mixer.cluster`` configured every ``syncclass mixer`` process is one node. Redis
keys (prefix ``mixer.cluster.key_prefix``):

- ``{p}:node:{id}`` — the node's :class:`~syncclass.placement.NodeLoad` (hash), expiring
  ``lease_ttl_s`` after its last heartbeat (every ``heartbeat_s``); a node with media
  workers (``mixer.workers``) has a :class:`Cluster` in each worker, each writing its own
  fields of the hash (:func:`~syncclass.placement.slot_fields`), and readers sum the live
  ones (:func:`~syncclass.placement.node_load_of`);
- ``{p}:place:{pairing}`` — the node a pairing's classrooms go to (a lease, same expiry),
  renewed by that node's heartbeat while it has the pairing's live lesson or classrooms
  (every worker of the node holds leases as the node; a worker also renews its node's
  leases of live lessons a sibling worker runs, so a worker the front restarts after a
  crash finds its lessons still placed on its node and resumes them from Redis);
- ``{p}:lesson:{pairing}`` — the pairing's live lesson (the ``lessons.json`` document of
  :mod:`syncclass.lesson`), written by its node, deleted when the lesson ends: the state
  a survivor resumes the lesson from (same ``lesson_id``, same start time);
- ``{p}:analytics:{pairing}`` — the live lesson's analytics checkpoint (a hash:
  ``lesson_id``, ``doc``: :class:`~syncclass.analytics.checkpoint.AnalyticsCheckpoint`),
  written by the node holding the pairing's lease every ``checkpoint_s`` with its
  heartbeat, deleted when the lesson ends (and expiring after a school day regardless): the
  survivor adds it to the lesson's analytics, so the report covers both parts.

:meth:`Cluster.place` is the one hook signaling calls before it welcomes a classroom: it
answers ``None`` (serve here) or the node to redirect to. A pairing placed on a live node
stays there (a node never takes a lesson from a live owner); a pairing whose lease expired
(its node died) is claimed by the node the classroom reached, which resumes its live
lesson from Redis. Redis down: the node keeps its live lessons and serves the classrooms
that reach it; one ERROR line, and the heartbeat writes everything again when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import psutil
from aiohttp import web

from syncclass.auth import RevokedSessions
from syncclass.config import ClusterConfig, ClusterNodeConfig, CountyConfig
from syncclass.errors import ConfigError, InvalidStateError
from syncclass.lesson import Lesson, lessons_from_json, lessons_to_json
from syncclass.placement import (
    NodeLoad,
    node_load_of,
    pairing_of_classroom,
    pick_node,
    slot_field_names,
    slot_fields,
)
from syncclass.redact import redact_text, redact_url

from .core import Mixer, now_ms

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5
"""Socket timeout of every Redis call: a hello waits at most this long for a dead Redis."""

# Claim a lease for ARGV[1] (or renew it) unless another node holds it; returns the holder.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""
# Take over a lease from a node known dead (ARGV[2]) unless someone else took it meanwhile.
_TAKE_OVER = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return cur
"""
# Renew the leases KEYS[1..n] held by node ARGV[1] whose lesson KEYS[n+1..2n] is still in
# Redis (a sibling worker's live lessons, while that worker restarts).
_RENEW_NODE = """
local n = #KEYS / 2
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[1] and redis.call('EXISTS', KEYS[n + i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 0
"""
# Delete a key only while it holds ARGV[1] (a lease we own; a lesson document of ours).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Delete a lesson's analytics checkpoint (a hash) only while it is of lesson ARGV[1].
_DELETE_CHECKPOINT = """
if redis.call('TYPE', KEYS[1]).ok == 'hash' and
   redis.call('HGET', KEYS[1], 'lesson_id') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
CHECKPOINT_TTL_MS = 12 * 3600 * 1000
"""A checkpoint no node renews or deletes (every node of its lesson died, and no survivor
resumed it) leaves Redis after this long, ms."""


class LessonCheckpoints(Protocol):
    """What a node keeps of a live lesson beyond its lesson document (the analytics),
    checkpointed to Redis and added back by the survivor that resumes the lesson."""

    def checkpoint(self, lesson: Lesson, ts_ms: int, node_id: str) -> str | None:
        """The lesson's state up to ``ts_ms`` as a bounded document; ``None``: none."""

    def resume(self, lesson: Lesson, doc: str | None, resumed_ms: int) -> None:
        """``lesson`` was just resumed here: add ``doc`` (``None``: no checkpoint found),
        logging (never raising) if it is unusable."""


def node_of(config: CountyConfig, node_id: str | None) -> ClusterNodeConfig:
    """This process's node of ``mixer.cluster`` (``node_id`` or the config's);
    ConfigError in words when it is missing or unknown."""
    cluster = config.mixer.cluster
    if cluster is None:
        raise ConfigError("mixer.cluster is not configured")
    chosen = node_id or cluster.node_id
    if chosen is None:
        raise ConfigError("mixer.cluster: which node is this? Set mixer.cluster.node_id or "
                          f"pass --node-id (one of {', '.join(n.id for n in cluster.nodes)})")
    try:
        return cluster.node(chosen)
    except KeyError:
        raise ConfigError(f"mixer.cluster: node {chosen!r} is not one of nodes "
                          f"({', '.join(n.id for n in cluster.nodes)})") from None


class Cluster:
    """This node's part in the registry: heartbeat, leases, placement, lesson state.

    ``worker``: this process is media worker ``worker`` of the node (``None``: the node is
    one process); it beats for the node with its own lessons and classrooms.
    ``start()`` then ``aclose()``; the heartbeat task is owned here."""

    def __init__(self, mixer: Mixer, cluster: ClusterConfig, node: ClusterNodeConfig,
                 worker: int | None = None) -> None:
        import redis.asyncio as aioredis  # optional: only with mixer.cluster

        self.mixer = mixer
        self.cfg = cluster
        self.node = node
        self.worker = worker
        self.shown_url = redact_url(cluster.redis_url.get_secret_value())
        self.redis: Any = aioredis.from_url(
            cluster.redis_url.get_secret_value(), decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
            retry_on_timeout=False)
        self.ttl_ms = int(cluster.lease_ttl_s * 1000)
        self.redis_up: bool | None = None
        """Whether the last Redis call worked (``None``: none made yet)."""
        self.nodes: dict[str, NodeLoad] = {}
        """Live nodes as the last heartbeat read them (the dashboard's and /metrics' view)."""
        self.resumed: list[str] = []
        """Lesson ids this node resumed from a dead node (fail-over), oldest first."""
        self._ended: dict[str, str] = {}
        """Pairing -> lesson document of an ended lesson still to delete from Redis."""
        self.checkpoints: LessonCheckpoints | None = None
        """The analytics of live lessons, checkpointed with the heartbeat (set by the app)."""
        self._checkpointed: dict[str, float] = {}
        """Lesson id -> monotonic time of its last checkpoint written to Redis."""
        self._ended_checkpoints: dict[str, str] = {}
        """Pairing -> lesson id of an ended lesson whose checkpoint is still to delete."""
        self._held: set[str] = set()
        """Pairings whose lease the last heartbeat held."""
        self.revocations: RevokedSessions | None = None
        """The dashboard's logged-out sessions, shared with every node (set by the app)."""
        self._revoked_out: dict[str, float] = {}
        """Logouts made on this node still to write to Redis: digest -> expiry, epoch s."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._place_lock = asyncio.Lock()
        self._proc = psutil.Process()
        self._claim = self.redis.register_script(_CLAIM)
        self._take_over = self.redis.register_script(_TAKE_OVER)
        self._delete_if = self.redis.register_script(_DELETE_IF)
        self._renew_node = self.redis.register_script(_RENEW_NODE)
        self._delete_checkpoint = self.redis.register_script(_DELETE_CHECKPOINT)
        mixer.lessons.on_change.append(self._lesson_changed)

    # -- keys ---------------------------------------------------------------------------------
    def _key(self, kind: str, name: str) -> str:
        return f"{self.cfg.key_prefix}:{kind}:{name}"

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Register this node (a Redis that is down only delays it) and start beating."""
        self._proc.cpu_percent(None)  # the first call starts the measurement
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"cluster-{self.node.id}")
        logger.info("node %s%s: in cluster at %s (Redis %s)", self.node.id,
                    "" if self.worker is None else f" (media worker {self.worker})",
                    self.node.url, self.shown_url)

    async def aclose(self) -> None:
        """Stop beating; leave the registry and release this node's leases, so survivors
        take its lessons at once rather than after ``lease_ttl_s``. A media worker removes
        only its own part of the node's entry and the leases of its own lessons and
        classrooms (its siblings' stay placed; a node stopping stops every worker)."""
        if self._task is not None:
            # The flag too: redis-py may swallow a cancel that lands inside one of its
            # calls, and the loop must end anyway (within heartbeat_s).
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # Redis down: the leases expire by themselves
            # A last checkpoint while the leases are still ours: a node stopped on purpose
            # (a rolling restart) loses no analytics, only the gap until a survivor resumes.
            await self._write_checkpoints(self._held, force=True)
            pipe = self.redis.pipeline(transaction=False)
            if self.worker is None:
                pipe.delete(self._key("node", self.node.id))
            else:  # the last worker to go leaves an empty hash, which Redis deletes
                pipe.hdel(self._key("node", self.node.id), *slot_field_names(self.worker))
            for pairing in self._my_pairings():
                await self._delete_if(keys=[self._key("place", pairing)], args=[self.node.id])
            await pipe.execute()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.wait, not asyncio.timeout: on 3.11 a cancel arriving as the timeout
            # fires is turned into TimeoutError and lost (the task would never stop).
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.cfg.heartbeat_s)
            finally:
                waiter.cancel()
            self._wake.clear()
            await self.beat()

    # -- Redis health -------------------------------------------------------------------------
    def _redis_failed(self, what: str, exc: BaseException) -> None:
        if self.redis_up is not False:
            logger.error("node %s: Redis at %s unreachable (%s: %s); live lessons go on, "
                         "placement and fail-over wait until it returns", self.node.id,
                         self.shown_url, what, redact_text(str(exc)) or type(exc).__name__)
        self.redis_up = False

    def _redis_ok(self) -> None:
        if self.redis_up is False:
            logger.warning("node %s: Redis at %s is back; node and lessons registered again",
                           self.node.id, self.shown_url)
        self.redis_up = True

    # -- heartbeat ----------------------------------------------------------------------------
    def _my_pairings(self) -> set[str]:
        """Pairings this node serves: live lessons and connected classrooms."""
        mine = {lesson.pairing_id for lesson in self.mixer.lessons.live_lessons()}
        for cid in self.mixer.sessions:
            pairing = pairing_of_classroom(self.mixer.config, cid)
            if pairing is not None:
                mine.add(pairing)
        return mine

    def load(self) -> NodeLoad:
        live = self.mixer.lessons.live_lessons()
        return NodeLoad(node_id=self.node.id, url=self.node.url, lessons=len(live),
                        sessions=len(self.mixer.sessions),
                        cpu_percent=self._proc.cpu_percent(None), heartbeat_ms=now_ms(),
                        lesson_ids=tuple(sorted(x.lesson_id for x in live)))

    async def beat(self) -> None:
        """Write this node's entry, renew its leases and live lessons, delete ended ones,
        read the other nodes. Redis errors are logged once (never raised)."""
        try:
            load = self.load()
            node_key = self._key("node", self.node.id)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(node_key, mapping=slot_fields(load, self.worker))
            pipe.pexpire(node_key, self.ttl_ms)
            for lesson in self.mixer.lessons.live_lessons():
                pipe.set(self._key("lesson", lesson.pairing_id), lessons_to_json([lesson]))
            await pipe.execute()
            held = set()
            for pairing in self._my_pairings():
                holder = await self._claim(keys=[self._key("place", pairing)],
                                           args=[self.node.id, self.ttl_ms])
                if holder != self.node.id:
                    logger.error("node %s: pairing %s is placed on node %s; its classrooms "
                                 "here are sent there when they reconnect", self.node.id,
                                 pairing, holder)
                else:
                    held.add(pairing)
            if self.worker is not None:
                await self._renew_siblings(held)
            for pairing, doc in list(self._ended.items()):
                await self._delete_if(keys=[self._key("lesson", pairing)], args=[doc])
                self._ended.pop(pairing, None)
            for pairing, lesson_id in list(self._ended_checkpoints.items()):
                await self._delete_checkpoint(keys=[self._key("analytics", pairing)],
                                              args=[lesson_id])
                self._ended_checkpoints.pop(pairing, None)
            self._held = held
            await self._write_checkpoints(held)
            await self._share_revocations()
            self.nodes = await self._read_nodes()
        except Exception as exc:  # redis.RedisError, OSError: Redis down or unreachable
            self._redis_failed("heartbeat", exc)
            return
        self._redis_ok()

    def revoked(self, digest: str, expires_s: float) -> None:
        """A dashboard logout on this node (``RevokedSessions.on_revoke``): written to
        Redis at once (the next heartbeat, woken now), read by the other nodes at theirs."""
        self._revoked_out[digest] = expires_s
        self._wake.set()

    async def _share_revocations(self) -> None:
        """Write this node's new logouts to the county's sorted set (score: expiry) and
        read everyone's unexpired ones into :attr:`revocations`."""
        if self.revocations is None:
            return
        key = self._key("sessions", "revoked")
        now_s = time.time()
        pipe = self.redis.pipeline(transaction=False)
        out = dict(self._revoked_out)
        if out:
            pipe.zadd(key, out)
        pipe.zremrangebyscore(key, "-inf", now_s)
        pipe.zrangebyscore(key, now_s, "+inf", withscores=True)
        replies = await pipe.execute()
        for digest, expires_s in replies[-1]:
            self.revocations.add(digest, float(expires_s))
        for digest in out:  # written (a failed call raised above and keeps them queued)
            self._revoked_out.pop(digest, None)

    async def _renew_siblings(self, mine: set[str]) -> None:
        """Renew this node's leases of the county's other pairings that have a live lesson
        in Redis: a sibling worker's (or one that crashed and is restarting: its lessons
        stay on this node, where it resumes them, instead of going to another node)."""
        others = [p.id for p in self.mixer.config.pairings if p.id not in mine]
        if not others:
            return
        keys = ([self._key("place", p) for p in others]
                + [self._key("lesson", p) for p in others])
        await self._renew_node(keys=keys, args=[self.node.id, self.ttl_ms])

    async def _write_checkpoints(self, held: set[str], *, force: bool = False) -> None:
        """Write the analytics of each live lesson whose pairing this node holds, if its
        last checkpoint is ``checkpoint_s`` old (``force``: whatever its age; a node that
        lost the lease never overwrites the survivor's). Redis errors propagate (the
        heartbeat logs them; the checkpoints are written again when Redis is back)."""
        if self.checkpoints is None:
            return
        now = time.monotonic()
        pipe = self.redis.pipeline(transaction=True)  # a reader sees the old or the new one
        written = []
        for lesson in self.mixer.lessons.live_lessons():
            recent = (now - self._checkpointed.get(lesson.lesson_id, -1e9)
                      < self.cfg.checkpoint_s - 0.05)
            if lesson.pairing_id not in held or (recent and not force):
                continue
            try:
                doc = self.checkpoints.checkpoint(lesson, now_ms(), self.node.id)
            except Exception:  # a bug there must not stop the heartbeat
                logger.exception("lesson %s: analytics checkpoint failed", lesson.lesson_id)
                continue
            if doc is None:
                continue
            key = self._key("analytics", lesson.pairing_id)
            pipe.delete(key)  # whatever was there, even of another type
            pipe.hset(key, mapping={"lesson_id": lesson.lesson_id, "doc": doc})
            pipe.pexpire(key, CHECKPOINT_TTL_MS)
            written.append(lesson.lesson_id)
        if written:
            await pipe.execute()
            for lesson_id in written:
                self._checkpointed[lesson_id] = now

    async def _read_checkpoint(self, pairing: str) -> str | None:
        """The analytics checkpoint of ``pairing``'s lesson (``None``: none); one that
        cannot be read is logged and skipped: the lesson resumes with fresh analytics."""
        try:
            fields = await self.redis.hgetall(self._key("analytics", pairing))
        except Exception as exc:  # redis.ResponseError: not a hash; or Redis just went down
            logger.error("node %s: pairing %s: analytics checkpoint in Redis unreadable "
                         "(%s); the report covers the lesson from its resumption on",
                         self.node.id, pairing, redact_text(str(exc)) or type(exc).__name__)
            return None
        if not fields:
            return None
        return str(fields.get("doc", ""))  # no doc field: refused as malformed when parsed

    async def _read_nodes(self) -> dict[str, NodeLoad]:
        pipe = self.redis.pipeline(transaction=False)
        for n in self.cfg.nodes:
            pipe.hgetall(self._key("node", n.id))
        out: dict[str, NodeLoad] = {}
        for n, fields in zip(self.cfg.nodes, await pipe.execute(), strict=True):
            try:
                load = node_load_of(n.id, fields, self.ttl_ms)
            except ValueError as exc:
                logger.warning("node %s: %s", self.node.id, exc)
                continue
            if load is not None:  # else expired: the node is dead (or not started)
                out[n.id] = load
        return out

    def _lesson_changed(self, lesson: Lesson) -> None:
        if lesson.state == "live":
            self._ended.pop(lesson.pairing_id, None)
            self._ended_checkpoints.pop(lesson.pairing_id, None)
        else:
            self._checkpointed.pop(lesson.lesson_id, None)
            self._ended_checkpoints[lesson.pairing_id] = lesson.lesson_id
            # The document as the heartbeat wrote it while live: deleted only if no
            # survivor has rewritten it meanwhile.
            live = Lesson(**{**lesson.__dict__, "state": "live", "ended_ms": None})
            self._ended[lesson.pairing_id] = lessons_to_json([live])
        self._wake.set()

    # -- placement ----------------------------------------------------------------------------
    async def place(self, classroom_id: str) -> tuple[str, str] | None:
        """Where ``classroom_id`` is served: ``None`` here, else ``(node id, node URL)``
        to redirect it to (a node of ``mixer.cluster.nodes``).

        Called before a classroom is welcomed (and before a lesson API call). Redis down:
        ``None`` (the node serves who reaches it; its live lessons go on)."""
        pairing = pairing_of_classroom(self.mixer.config, classroom_id)
        if pairing is None:
            return None
        async with self._place_lock:  # one decision at a time: no double resume
            try:
                node = await self._place(pairing)
            except Exception as exc:  # redis.RedisError, OSError
                self._redis_failed(f"placing classroom {classroom_id}", exc)
                return None
        return None if node is None else (node.id, node.url.rstrip("/"))

    async def _place(self, pairing: str) -> ClusterNodeConfig | None:
        place_key = self._key("place", pairing)
        local = self.mixer.lessons.lesson_of_pairing(pairing)
        holder: str | None = await self.redis.get(place_key)
        if holder is not None and holder != self.node.id:
            if await self.redis.exists(self._key("node", holder)) and (
                    holder in {n.id for n in self.cfg.nodes}):
                self._redis_ok()
                return self.cfg.node(holder)
            # Its node left the registry (clean stop, or its entry expired first).
            holder = await self._take_over(keys=[place_key],
                                           args=[self.node.id, holder, self.ttl_ms])
            if holder != self.node.id:
                return self.cfg.node(holder) if holder in {n.id for n in self.cfg.nodes} \
                    else None
        elif holder is None:
            doc = await self.redis.get(self._key("lesson", pairing))
            if doc is None and (local is None or local.state != "live"):
                chosen = pick_node(list((await self._read_nodes()).values()), self.node.id)
                target = chosen.node_id if chosen is not None else self.node.id
                holder = await self._claim(keys=[place_key], args=[target, self.ttl_ms])
            else:
                holder = await self._claim(keys=[place_key], args=[self.node.id, self.ttl_ms])
            if holder != self.node.id:
                self._redis_ok()
                return self.cfg.node(holder)
        self._redis_ok()
        await self._resume(pairing, local)
        return None

    async def _resume(self, pairing: str, local: Lesson | None) -> None:
        """This node holds ``pairing``: resume its live lesson from Redis unless live here."""
        if local is not None and local.state == "live":
            return
        doc = await self.redis.get(self._key("lesson", pairing))
        if doc is None:
            return
        try:
            lessons = lessons_from_json(doc, self.mixer.config, now_ms())
        except ValueError as exc:
            logger.error("node %s: pairing %s: lesson state in Redis is malformed (%s); "
                         "not resumed", self.node.id, pairing, exc)
            return
        checkpoint = await self._read_checkpoint(pairing) if self.checkpoints else None
        for lesson in lessons:
            try:
                self.mixer.lessons.restore(lesson)
            except InvalidStateError as exc:
                logger.error("lesson %s: not resumed: %s", lesson.lesson_id, exc)
                continue
            if self.checkpoints is not None:
                # Now, with no await since the restore: no classroom has rejoined yet.
                try:
                    self.checkpoints.resume(lesson, checkpoint, now_ms())
                except Exception:
                    logger.exception("lesson %s: analytics of its previous node not "
                                     "restored", lesson.lesson_id)
            self.resumed.append(lesson.lesson_id)
            logger.warning("lesson %s: resumed on node %s (its node or worker stopped; "
                           "started %d ms ago)", lesson.lesson_id, self.node.id,
                           now_ms() - (lesson.started_ms or now_ms()))

    # -- views --------------------------------------------------------------------------------
    def summary(self) -> dict[str, object]:
        """This node, Redis's state and every live node (dashboard, ``/api/cluster``)."""
        return {"node_id": self.node.id, "worker": self.worker, "url": self.node.url,
                "redis": self.shown_url,
                "redis_up": self.redis_up, "resumed": list(self.resumed),
                "nodes": [n.to_dict() for n in sorted(self.nodes.values(),
                                                       key=lambda n: n.node_id)],
                "checked_ms": int(time.time() * 1000)}


CLUSTER_KEY = web.AppKey("cluster", Cluster)


def setup_cluster(app: web.Application, cluster: Cluster) -> None:
    """Start the node's heartbeat with the app and leave the registry on shutdown (before
    the mixer closes its sessions: survivors take the lessons at once)."""
    app[CLUSTER_KEY] = cluster  # for tests and tools; the app passes it on to its users

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await cluster.start()
        yield

    async def on_shutdown(app: web.Application) -> None:
        await cluster.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.insert(0, on_shutdown)
