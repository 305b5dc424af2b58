"""A mixer node: one signaling/HTTP front and media worker processes (issue 20).

Each worker is the whole mixer app (:func:`mixer.app.create_app`) in its own process,
serving a unix socket in ``<data_dir>/run/`` (a folder only the mixer's user may enter):
it owns its lessons' peers (its own UDP sockets: media goes straight to the worker, never
through the front), composition, encoding, analytics, recording publisher (its own
endpoint, :func:`syncclass.workers.worker_endpoint`) and its own
``<data_dir>/workers/<n>/lessons.json``, so a restarted worker resumes its lessons.

The front (:func:`create_front_app`) serves the public port:

- ``GET /ws``: the first message is checked as the mixer checks it (size, parse, hello
  timeout, refusals before hello, failed credentials per address); a ``hello`` or
  ``observer_hello`` then goes to the worker of its pairing group
  (:class:`syncclass.workers.Placement`: sticky, new groups to the least-loaded worker)
  with the client's address in :data:`mixer.app.CLIENT_HEADER`, and the socket is relayed
  both ways. The worker authenticates it as before; an ``auth_failed`` it answers counts
  against the address here too, so N workers do not mean N times the attempts.
- lesson routes (start/end, hand raise, reports, comments) go to that lesson's worker;
  pages, static files and the dashboard login to worker 0 (every worker shares one session
  secret, so a session is valid on all; a logout goes to every worker);
- ``/api/lessons``, ``/api/stats``, ``/metrics``, ``/healthz``, ``/readyz``,
  ``/api/recorder``, ``/api/observers`` and the dashboard's snapshot and events merge every
  worker's answer (each worker still checks the credential: the front forwards it) and add
  the node's workers (pid, up, lessons, CPU %, RSS, restarts).

:class:`Node` owns the workers: starts them, checks them every
:data:`SUPERVISE_INTERVAL_S`, restarts one that died (backoff :data:`RESTART_BACKOFF_S`
doubling to :data:`RESTART_BACKOFF_MAX_S`), and stops them on shutdown (SIGTERM, then
SIGKILL after :data:`STOP_TIMEOUT_S`). A worker also stops when the front's pipe to it
closes (the front died). Its classrooms' sockets close with code 1012 and the agents
reconnect by themselves.

With ``mixer.cluster`` each worker also runs the node's part in the cluster
(:class:`mixer.cluster.Cluster` with its worker index): it beats for the node with its own
lessons, answers a classroom of a pairing placed on another node with the ``redirect``
(relayed to the client like any message), and a restarted worker resumes its lessons from
Redis. The front shows the cluster registry once (:func:`merge_cluster`,
:func:`merge_metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from syncclass.config import CountyConfig
from syncclass.errors import AuthError, ConfigError, ProtocolError
from syncclass.httperrors import json_error
from syncclass.private_files import private_dir
from syncclass.protocol import Hello, ObserverHello, dumps_strict, parse_client_message
from syncclass.workers import Placement, classroom_groups, pairing_groups, worker_endpoint

from .app import CLIENT_HEADER, SCHEME_HEADER, create_app
from .core import Mixer, reply_error
from .guard import GuardStats, RedactingAccessLogger, hello_deadline, setup_guard
from .guard.rates import refuse_unauthenticated
from .threadcpu import thread_cpu_seconds

logger = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 0.5
"""How often the front checks its workers (process alive, socket answering, lessons)."""
RESTART_BACKOFF_S = 0.5
"""First wait before restarting a worker that died; doubles per quick death."""
RESTART_BACKOFF_MAX_S = 10.0
STABLE_S = 30.0
"""A worker up this long has its backoff reset."""
HUNG_S = 30.0
"""A worker whose socket has not answered for this long (alive but stuck) is killed and
restarted like one that died."""
STOP_TIMEOUT_S = 10.0
"""Shutdown: a worker gets this long after SIGTERM before SIGKILL."""
START_TIMEOUT_S = 60.0
"""The front waits this long for its workers before serving anyway."""
WORKER_REQUEST_TIMEOUT_S = 10.0
"""A merged API request waits this long for each worker."""
CLOSE_WORKER_GONE = 1012
"""WebSocket close code when a classroom's worker went away (RFC 6455: service restart)."""
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailers", "transfer-encoding",
                         "upgrade", "content-length", CLIENT_HEADER.lower(),
                         SCHEME_HEADER.lower()})


class WorkerUnavailable(Exception):
    """The chosen worker is not serving (starting or restarting)."""


# -- the worker process -------------------------------------------------------------------------
def worker_config(config: CountyConfig, index: int, session_secret: str,
                  api_token: str) -> CountyConfig:
    """Worker ``index``'s config: its recorder endpoint, the node's shared dashboard session
    secret and an ops API token the front polls it with (the configured one if any)."""
    recorder = config.recorder.model_copy(
        update={"endpoint": worker_endpoint(config.recorder.endpoint, index)})
    ops = config.ops.model_copy(update={"session_secret": config.ops.session_secret
                                        or session_secret,
                                        "api_token": config.ops.api_token or api_token})
    return config.model_copy(update={"recorder": recorder, "ops": ops})


def worker_lessons_path(config: CountyConfig, index: int) -> Path:
    return Path(config.mixer.data_dir) / "workers" / str(index) / "lessons.json"


async def serve_worker(config: CountyConfig, index: int, socket_path: Path,
                       stop: asyncio.Event) -> None:
    """Run media worker ``index`` on ``socket_path`` until ``stop`` (the front closes our
    stdin, or SIGTERM)."""
    app = create_app(config, resume_lessons=True,
                     lessons_path=worker_lessons_path(config, index), behind_front=True,
                     worker=index)
    # A plain runner: the front guards the public port (slow clients, connections per
    # address) and writes the access log; here every connection comes from the front
    # (and its checks twice a second would flood a log).
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(socket_path))
    await site.start()
    os.chmod(socket_path, 0o600)
    logger.info("media worker %d (pid %d) serving %s", index, os.getpid(), socket_path)
    try:
        await stop.wait()
    finally:
        logger.info("media worker %d stopping", index)
        await runner.cleanup()


def read_worker_handoff() -> tuple[CountyConfig, int, Path]:
    """The config, index and socket the front wrote to this worker's stdin (a pickle from
    our own parent over a pipe; the pipe then stays open, see :func:`stop_on_stdin_eof`)."""
    config, index, socket_path = pickle.load(sys.stdin.buffer)
    return config, index, Path(socket_path)


def stop_on_stdin_eof(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin closes: the front exited (even by SIGKILL)."""
    loop = asyncio.get_running_loop()

    def wait() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait, name="front-pipe", daemon=True).start()


def _stale_worker(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive and a media worker (/proc: instant
    reads, no disk)."""
    try:
        pid = int(pid_file.read_text().strip())
        return pid if b"mixer-worker" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except (OSError, ValueError):
        return None


# -- the front's view of one worker ---------------------------------------------------------------
@dataclass
class Worker:
    """One media worker process as the front sees it."""

    index: int
    socket_path: Path
    proc: asyncio.subprocess.Process | None = None
    session: aiohttp.ClientSession | None = None
    up: bool = False
    """Its socket answered the last check."""
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = RESTART_BACKOFF_S
    restart_at: float | None = None
    last_ok: float = 0.0
    """When its socket last answered (monotonic s)."""
    lessons: list[dict[str, Any]] = field(default_factory=list)
    """Its lessons from the last poll (``/api/lessons``)."""
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    _cpu_mark: tuple[float, float] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def sample_process(self) -> None:
        """CPU % since the last sample and RSS, from ``/proc``."""
        pid = self.pid
        if pid is None or not self.alive:
            self.cpu_percent = self.rss_bytes = None
            return
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except (OSError, IndexError):
            return
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_s = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
        now = time.monotonic()
        if self._cpu_mark is not None and now > self._cpu_mark[0]:
            self.cpu_percent = round(100 * (cpu_s - self._cpu_mark[1])
                                     / (now - self._cpu_mark[0]), 1)
        self._cpu_mark = (now, cpu_s)
        self.rss_bytes = int(statm[1]) * os.sysconf("SC_PAGE_SIZE")

    def info(self) -> dict[str, Any]:
        return {"worker": self.index, "pid": self.pid, "up": self.up,
                "restarts": self.restarts,
                "lessons": sorted(str(x.get("lesson_id")) for x in self.lessons
                                  if x.get("state") == "live"),
                "cpu_percent": self.cpu_percent, "rss_bytes": self.rss_bytes}


class Node:
    """The front's workers: ``start()`` (spawn, wait until they serve), then ``aclose()``.

    ``worker_command``: the command line that runs one worker (``syncclass mixer-worker``);
    it reads its config, index and socket from stdin.
    """

    def __init__(self, config: CountyConfig, workers: int, worker_command: list[str]) -> None:
        if workers < 1:
            raise ConfigError("a node needs at least one media worker (mixer.workers)")
        self.config = config
        self.command = worker_command
        self.run_dir = Path(config.mixer.data_dir) / "run"
        self.workers = [Worker(i, self.run_dir / f"worker-{i}.sock") for i in range(workers)]
        self.placement = Placement(workers)
        self.pairing_group = pairing_groups(config.pairings)
        self.classroom_group = classroom_groups(config)
        self.lesson_worker: dict[str, int] = {}
        """Lesson id -> the worker that ran it (reports and comments go there)."""
        self.session_secret = secrets.token_hex(32)
        self.api_token = config.ops.api_token or secrets.token_urlsafe(32)
        self._configs = [worker_config(config, i, self.session_secret, self.api_token)
                         for i in range(workers)]
        self.front = Mixer(config)
        """Limits and counters of the front's signaling checks (no lessons run here)."""
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self.guard_stats: GuardStats | None = None
        """The public port's guard counters (slow clients, connections per address)."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        # 0700 whatever the umask: only the mixer's user reaches the workers' sockets.
        private_dir(self.run_dir, own=True)
        await asyncio.gather(*(self._reap_stale(w) for w in self.workers))
        self._adopt_single_process_lessons()
        for w in self.workers:
            await self._spawn(w)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and not all(w.up for w in self.workers):
            await self._check_all()
            if not all(w.up for w in self.workers):
                await asyncio.sleep(0.1)
        if not all(w.up for w in self.workers):
            logger.error("node: workers %s not serving after %.0f s; serving anyway",
                         [w.index for w in self.workers if not w.up], START_TIMEOUT_S)
        self._task = asyncio.create_task(self._supervise(), name="node-supervisor")

    async def aclose(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(self._stop(w) for w in self.workers))

    def _adopt_single_process_lessons(self) -> None:
        """Live lessons a one-process mixer left in ``<data_dir>/lessons.json`` (before
        ``mixer.workers`` was set) go to worker 0, which resumes them."""
        legacy = Path(self.config.mixer.data_dir) / "lessons.json"
        target = worker_lessons_path(self.config, 0)
        if legacy.is_file() and not target.exists():
            private_dir(target.parent)
            os.replace(legacy, target)
            logger.info("node: lessons of the one-process mixer (%s) resume on worker 0",
                        legacy)

    def _pid_file(self, w: Worker) -> Path:
        return self.run_dir / f"worker-{w.index}.pid"

    async def _reap_stale(self, w: Worker) -> None:
        """Wait for a worker of a previous front (killed: its workers stop when their pipe
        closes) to finish, so the new one can bind its recorder endpoint and resume the
        same lessons; SIGKILL after :data:`STOP_TIMEOUT_S`."""
        pid = _stale_worker(self._pid_file(w))
        if pid is None:
            return
        alive, deadline = True, time.monotonic() + STOP_TIMEOUT_S
        while alive and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            alive = _stale_worker(self._pid_file(w)) == pid
        if alive:
            logger.warning("node: worker %d of a previous run (pid %d) still running: SIGKILL",
                           w.index, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)

    async def _spawn(self, w: Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            w.socket_path.unlink()  # a stale socket of a worker that died
        proc = await asyncio.create_subprocess_exec(*self.command, stdin=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps((self._configs[w.index], w.index, str(w.socket_path))))
        await proc.stdin.drain()
        # stdin stays open: the worker stops when it closes (this process ended).
        self._pid_file(w).write_text(str(proc.pid))
        w.proc, w.up, w.started_at, w.restart_at = proc, False, time.monotonic(), None
        w._cpu_mark = None
        if w.session is None:
            w.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(w.socket_path), limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        logger.info("node: worker %d started (pid %d)", w.index, proc.pid)

    async def _stop(self, w: Worker) -> None:
        proc = w.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                logger.warning("node: worker %d did not stop in %.0f s: SIGKILL", w.index,
                               STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        w.up = False
        if w.session is not None:
            await w.session.close()
            w.session = None

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            try:
                await self._check_all()
            except Exception:  # the supervisor must outlive any one bad check
                logger.exception("node: worker check failed")

    async def _check_all(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is not None and w.restart_at is None:
                w.up = False
                if now - w.started_at >= STABLE_S:
                    w.backoff_s = RESTART_BACKOFF_S
                w.restart_at = now + w.backoff_s
                logger.warning("node: worker %d (pid %d) exited with %s; its lessons restart "
                               "in %.1f s", w.index, w.proc.pid, w.proc.returncode, w.backoff_s)
                w.backoff_s = min(RESTART_BACKOFF_MAX_S, w.backoff_s * 2)
                if w.proc.stdin is not None:
                    w.proc.stdin.close()
            if (w.alive and w.proc is not None
                    and now - max(w.last_ok, w.started_at) > HUNG_S):
                logger.error("node: worker %d (pid %d) has not answered for %.0f s: killed",
                             w.index, w.proc.pid, HUNG_S)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                w.last_ok = now  # one kill; the exit is handled on a later check
            if w.restart_at is not None and now >= w.restart_at and not self.closing:
                w.restarts += 1
                await self._spawn(w)
        await asyncio.gather(*(self._poll(w) for w in self.workers if w.alive))
        for w in self.workers:
            w.sample_process()

    async def _poll(self, w: Worker) -> None:
        """Whether ``w`` serves, and its lessons (pins the groups of its live lessons)."""
        try:
            status, body = await self.worker_json(
                w, "/api/lessons", {"Authorization": f"Bearer {self.api_token}"}, wait_s=2.0)
        except WorkerUnavailable:
            w.up = False
            return
        if status != 200 or not isinstance(body, dict):
            w.up = False
            return
        if not w.up:
            logger.info("node: worker %d serving", w.index)
        w.up, w.last_ok = True, time.monotonic()
        w.lessons = [x for x in body.get("lessons", []) if isinstance(x, dict)]
        for lesson in w.lessons:
            lid, pairing = lesson.get("lesson_id"), lesson.get("pairing_id")
            if isinstance(lid, str):
                self.lesson_worker[lid] = w.index
            if lesson.get("state") == "live" and pairing in self.pairing_group:
                group = self.pairing_group[str(pairing)]
                if self.placement.assigned.get(group) != w.index:
                    logger.info("node: pairing group %s runs on worker %d", group, w.index)
                    self.placement.pin(group, w.index)

    # -- placement ------------------------------------------------------------------------------
    def metrics_owner(self, classroom_id: str) -> int:
        """The worker whose figures of ``classroom_id`` the node shows: the one its group is
        placed on, worker 0 for a classroom no worker serves (every worker lists it)."""
        owner = self.placement.assigned.get(self.classroom_group.get(classroom_id, ""))
        return 0 if owner is None else owner

    def worker_of_group(self, group: str | None) -> Worker:
        alive = {w.index: w.alive for w in self.workers}
        index = self.placement.worker_for(group, alive) if group is not None else None
        if index is None:
            index = next((w.index for w in self.workers if w.up), 0)
        return self.workers[index]

    def worker_of_classroom(self, classroom_id: str) -> Worker:
        return self.worker_of_group(self.classroom_group.get(classroom_id))

    def worker_of_observer(self, hello: ObserverHello) -> Worker:
        pairing = hello.pairing_id
        if pairing is None:
            pairing = next((o.pairings[0] for o in self.config.observers
                            if o.id == hello.observer_id), None)
        return self.worker_of_group(self.pairing_group.get(pairing or ""))

    def worker_of_lesson(self, lesson_id: str) -> Worker:
        return self.workers[self.lesson_worker.get(lesson_id, self._first_up())]

    def _first_up(self) -> int:
        return next((w.index for w in self.workers if w.up), 0)

    # -- talking to workers ---------------------------------------------------------------------
    async def worker_json(self, w: Worker, path: str, headers: dict[str, str],
                          wait_s: float = WORKER_REQUEST_TIMEOUT_S) -> tuple[int, Any]:
        """GET ``path`` of worker ``w``: (status, JSON body or text)."""
        if w.session is None or not w.alive:
            raise WorkerUnavailable(f"worker {w.index} is not running")
        try:
            async with asyncio.timeout(wait_s):
                async with w.session.get(f"http://worker{path}", headers=headers,
                                         allow_redirects=False) as resp:
                    text = await resp.text()
                    try:
                        return resp.status, json.loads(text)
                    except ValueError:
                        return resp.status, text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WorkerUnavailable(f"worker {w.index}: {exc}") from None

    def status(self) -> dict[str, Any]:
        return {"workers": [w.info() for w in self.workers], "front_pid": os.getpid()}


NODE_KEY = web.AppKey("node", Node)


# -- the front's routes ---------------------------------------------------------------------------
def _forward_headers(request: web.Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    headers[CLIENT_HEADER] = request.remote or ""
    headers[SCHEME_HEADER] = request.scheme  # https at the front: Secure cookies
    return headers


async def ws_front(request: web.Request) -> web.StreamResponse:
    """``/ws``: check the first message as the mixer does, then relay to the worker."""
    node = request.app[NODE_KEY]
    front = node.front
    cfg = node.config.mixer
    limit = cfg.max_message_bytes
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s, max_msg_size=limit * 4)
    await ws.prepare(request)
    remote = request.remote
    upstream: aiohttp.ClientWebSocketResponse | None = None

    async def hello_timed_out() -> None:
        logger.info("closing a signaling socket from %s: no hello within %.1f s", remote,
                    cfg.hello_timeout_s)
        await reply_error(ws, front, "auth_timeout", f"no hello within {cfg.hello_timeout_s:g} s",
                          None)

    watchdog = asyncio.ensure_future(hello_deadline(ws, lambda: upstream is not None,
                                                    cfg.hello_timeout_s, hello_timed_out))
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            ref: str | None = None
            try:
                message = parse_client_message(msg.data, limit)
                ref = message.type
                if isinstance(message, Hello):
                    worker = node.worker_of_classroom(message.classroom_id)
                elif isinstance(message, ObserverHello):
                    worker = node.worker_of_observer(message)
                else:
                    raise AuthError("auth_required", "send 'hello' with your credential first")
                key, now = remote or "unknown", time.monotonic()
                if front.auth_failures.blocked(key, now):
                    wait = front.auth_failures.retry_after_s(key, now)
                    raise AuthError("rate_limited",
                                    f"too many failed attempts; retry in {wait:.0f} s")
                upstream = await _connect_worker(node, worker, request)
                if msg.type == WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                else:
                    await upstream.send_bytes(msg.data)
                break
            except ProtocolError as exc:
                await reply_error(ws, front, exc.code, exc.message, ref)  # type: ignore[arg-type]
            except AuthError as exc:
                await reply_error(ws, front, exc.code, exc.message, ref)  # type: ignore[arg-type]
                front.limits.log_refusal(ref, remote, exc.message)
                if exc.code == "rate_limited":
                    break
            except WorkerUnavailable as exc:
                logger.info("classroom socket from %s: %s", remote, exc)
                await reply_error(ws, front, "internal",
                                  "this lesson's media worker is restarting; retry", ref)
                await ws.close(code=CLOSE_WORKER_GONE, message=b"worker restarting")
                break
            if await refuse_unauthenticated(ws, front.limits, remote):
                break
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    if upstream is not None:
        await _relay(node, ws, upstream, remote)
    return ws


async def _connect_worker(node: Node, worker: Worker, request: web.Request
                          ) -> aiohttp.ClientWebSocketResponse:
    if worker.session is None or not worker.alive:
        raise WorkerUnavailable(f"worker {worker.index} is not running")
    try:
        return await worker.session.ws_connect(
            "http://worker/ws", headers={CLIENT_HEADER: request.remote or ""},
            autoping=True, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    except (aiohttp.ClientError, OSError) as exc:
        raise WorkerUnavailable(f"worker {worker.index}: {exc}") from None


async def _relay(node: Node, client: web.WebSocketResponse,
                 upstream: aiohttp.ClientWebSocketResponse, remote: str | None) -> None:
    """Both directions until either side ends; the other is then closed with its code."""
    send_timeout = node.config.mixer.send_timeout_s

    async def up() -> None:
        async for msg in client:
            if msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
        await upstream.close()

    async def down() -> None:
        first = True
        async for msg in upstream:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if first:
                first = False
                _count_auth_failure(node, msg.data, remote)
            async with asyncio.timeout(send_timeout):  # a client that does not read: dropped
                if msg.type == WSMsgType.TEXT:
                    await client.send_str(msg.data)
                else:
                    await client.send_bytes(msg.data)
        code = upstream.close_code
        gone = code is None or code in (1006, 1011)
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(send_timeout):
                await client.close(code=CLOSE_WORKER_GONE if gone or code is None else code,
                                   message=b"worker restarting" if gone else b"")

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                logger.debug("relay from %s ended: %r", remote, t.exception())
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if not upstream.closed:
            with contextlib.suppress(Exception):
                await upstream.close()
        if not client.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(send_timeout):
                    await client.close(code=CLOSE_WORKER_GONE, message=b"worker restarting")


def _count_auth_failure(node: Node, data: str | bytes, remote: str | None) -> None:
    """The worker's first answer refused the credential: count it against the address."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        reply = json.loads(data)
        if reply.get("type") == "error" and reply.get("code") == "auth_failed":
            node.front.auth_failures.allow(remote or "unknown", time.monotonic())


async def proxy(request: web.Request) -> web.StreamResponse:
    """Any other route: to the worker it concerns (see the module docstring)."""
    node = request.app[NODE_KEY]
    body = await request.read()  # bounded by client_max_size
    worker = _route(node, request, body)
    # Failed credentials of the JSON APIs count here too, so spreading attempts over
    # workers gains nothing (dashboard logins have their own limiter, on worker 0).
    key, now = request.remote or "unknown", time.monotonic()
    limiter = node.front.auth_failures
    api = request.path.startswith("/api/")
    if api and limiter.blocked(key, now):
        raise json_error(web.HTTPTooManyRequests, "rate_limited", "too many failed attempts; "
                         f"retry in {limiter.retry_after_s(key, now):.0f} s")
    if worker.session is None or not worker.alive:
        raise web.HTTPServiceUnavailable(text="media worker restarting; retry\n",
                                         headers={"Retry-After": "2"})
    try:
        async with worker.session.request(request.method, f"http://worker{request.rel_url}",
                                          headers=_forward_headers(request), data=body,
                                          allow_redirects=False) as resp:
            if api and resp.status == 401:
                limiter.allow(key, now)
            out = web.StreamResponse(status=resp.status, reason=resp.reason)
            for k, v in resp.headers.items():
                if k.lower() not in HOP_HEADERS and k.lower() != "content-encoding":
                    out.headers.add(k, v)
            await out.prepare(request)
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
    except (aiohttp.ClientError, OSError) as exc:
        logger.info("proxy %s to worker %d: %s", request.path, worker.index, exc)
        raise web.HTTPBadGateway(text="media worker unavailable; retry\n") from None


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /dashboard/logout``: every worker revokes the session (one login is valid on
    all; they share the node's logout file, and each live worker is also told at once, so
    the logout holds in memory where the file cannot be written); the answer is the one of
    the worker that serves pages."""
    node = request.app[NODE_KEY]
    body = await request.read()
    first = node.workers[node._first_up()]
    headers = _forward_headers(request)

    async def revoke(w: Worker) -> None:
        if w.session is None or not w.alive:
            return  # restarting: it reads the logout from the node's file when it is back
        try:
            async with asyncio.timeout(WORKER_REQUEST_TIMEOUT_S):
                async with w.session.post(f"http://worker{request.rel_url}", headers=headers,
                                          data=body, allow_redirects=False) as resp:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("logout: worker %d did not revoke the session: %s", w.index, exc)

    await asyncio.gather(*(revoke(w) for w in node.workers if w is not first))
    return await proxy(request)


def _route(node: Node, request: web.Request, body: bytes) -> Worker:
    parts = [p for p in request.path.split("/") if p]
    if request.path in ("/api/lessons/start", "/api/lessons/end", "/api/hand"):
        classroom = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            classroom = json.loads(body or b"{}").get("classroom_id")
        if isinstance(classroom, str):
            return node.worker_of_classroom(classroom)
    elif len(parts) >= 2 and parts[0] == "reports":
        return node.worker_of_lesson(parts[1])
    elif len(parts) >= 3 and parts[:2] in (["api", "reports"], ["api", "lessons"]):
        return node.worker_of_lesson(parts[2])
    return node.workers[node._first_up()]


Merge = Callable[[Node, list[tuple[Worker, Any]]], dict[str, Any]]


async def _fan_out(request: web.Request, path: str) -> list[tuple[Worker, Any]] | web.Response:
    """GET ``path`` of every serving worker with the client's credential: their bodies, or
    the first refusal (401/403/429) as it was answered."""
    node = request.app[NODE_KEY]
    headers = _forward_headers(request)
    live = [w for w in node.workers if w.alive]
    results = await asyncio.gather(*(node.worker_json(w, path, headers) for w in live),
                                   return_exceptions=True)
    out: list[tuple[Worker, Any]] = []
    for w, r in zip(live, results, strict=True):
        if isinstance(r, BaseException):
            continue  # a worker restarting: the others still answer
        status, body = r
        if status in (401, 403, 429):
            text = body if isinstance(body, str) else dumps_strict(body)
            return web.Response(status=status, text=text, content_type=(
                "text/plain" if isinstance(body, str) else "application/json"))
        if status == 200:
            out.append((w, body))
    return out


def _merged(path: str, merge: Merge) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        answers = await _fan_out(request, str(request.rel_url) if path == "" else path)
        if isinstance(answers, web.Response):
            return answers
        return web.json_response(merge(request.app[NODE_KEY], answers),
                                 headers={"Cache-Control": "no-store"}, dumps=dumps_strict)
    return handler


def merge_lessons(node: Node, answers: list[tuple[Worker, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"county": node.config.county, "lessons": [], "classrooms": {}}
    for w, body in answers:
        out["lessons"].extend({**x, "worker": w.index} for x in body.get("lessons", []))
        out["classrooms"].update({cid: {**c, "worker": w.index}
                                  for cid, c in body.get("classrooms", {}).items()})
    return out


def merge_stats(node: Node, answers: list[tuple[Worker, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"media": {}, "errors_sent": node.front.errors_sent, "sessions": []}
    for _, body in answers:
        out["media"].update(body.get("media", {}))
        out["errors_sent"] += int(body.get("errors_sent", 0))
        out["sessions"].extend(body.get("sessions", []))
    out["sessions"].sort()
    if any("process" in body for _, body in answers):  # an ops reader
        # The front's own tasks, threads, descriptors (leak checks), as one process gives.
        with contextlib.suppress(OSError):
            out["process"] = {"tasks": len(asyncio.all_tasks()),
                              "threads": threading.active_count(),
                              "fds": len(os.listdir("/proc/self/fd")),
                              "thread_cpu_s": thread_cpu_seconds()}
        out["node"] = node.status()
        if node.guard_stats is not None:
            out["guard"] = dataclasses.asdict(node.guard_stats)
        for w, body in answers:
            out["node"]["workers"][w.index]["process"] = body.get("process")
            out["node"]["workers"][w.index]["guard"] = body.get("guard")
    return out


def merge_by_worker(node: Node, answers: list[tuple[Worker, Any]]) -> dict[str, Any]:
    """One process's shape over every worker: numbers summed, lists joined (each item
    once), objects merged, anything else worker 0's; each worker's own answer under
    ``workers``."""
    out: dict[str, Any] = {}
    for _, body in answers:
        for k, v in body.items():
            have = out.get(k)
            if k not in out:
                out[k] = list(v) if isinstance(v, list) else dict(v) if isinstance(
                    v, dict) else v
            elif isinstance(v, bool) or v is None:
                out[k] = have if have is not None else v
            elif isinstance(v, int | float) and isinstance(have, int | float):
                out[k] = have + v
            elif isinstance(v, list) and isinstance(have, list):
                have.extend(x for x in v if x not in have)
            elif isinstance(v, dict) and isinstance(have, dict):
                have.update(v)
    out["workers"] = [{"worker": w.index, **body} for w, body in answers]
    return out


def merge_cluster(views: list[Any]) -> dict[str, Any] | None:
    """The cluster view of a node from its workers' (:meth:`mixer.cluster.Cluster.summary`;
    ``None`` without a cluster): the registry as the first worker read it (every worker
    reads the same one), Redis up only if every worker reaches it, the lessons each
    resumed."""
    parts = [v for v in views if isinstance(v, dict)]
    if not parts:
        return None
    out = {k: v for k, v in parts[0].items() if k != "worker"}
    ups = [p.get("redis_up") for p in parts]
    out["redis_up"] = False if False in ups else None if None in ups else True
    out["resumed"] = [x for p in parts for x in p.get("resumed", [])]
    return out


def merge_snapshot(node: Node, answers: list[tuple[Worker, Any]]) -> dict[str, Any]:
    """The dashboard's snapshot over every worker: classrooms, alerts and history of all;
    ``mixer`` is worker 0's health, ``workers`` each one's with the node's figures."""
    if not answers:
        return {"county": node.config.county, "classrooms": [], "workers": node.status()}
    out = dict(answers[0][1])
    out["alerts_firing"], out["recent_alerts"] = [], []
    # Every worker lists every configured classroom (offline where it is not connected):
    # each classroom's card and history come from the worker that serves it.
    best: dict[str, tuple[tuple[bool, bool], dict[str, Any], Any]] = {}
    for w, body in answers:
        out["alerts_firing"].extend(body.get("alerts_firing", []))
        out["recent_alerts"].extend(body.get("recent_alerts", []))
        for room in body.get("classrooms", []):
            cid = str(room.get("classroom_id"))
            owner = node.placement.assigned.get(node.classroom_group.get(cid, ""))
            rank = (room.get("state") != "offline", owner == w.index)
            if cid not in best or rank > best[cid][0]:
                best[cid] = (rank, room, body.get("history", {}).get(cid))
    out["classrooms"] = [room for _, room, _ in best.values()]
    out["cluster"] = merge_cluster([body.get("cluster") for _, body in answers])
    history = {cid: h for cid, (_, _, h) in best.items() if h is not None}
    out["recent_alerts"] = sorted(out["recent_alerts"],
                                  key=lambda a: a.get("ts_ms", 0))[-20:]
    if "history" in out:
        out["history"] = history
    status = node.status()
    for w, body in answers:
        status["workers"][w.index]["mixer"] = body.get("mixer")
    out["node"] = status
    return out


async def dashboard_events(request: web.Request) -> web.StreamResponse:
    """The dashboard's server-sent events over every worker: ``init`` then a ``sample``
    each sample interval (merged snapshots), ``logout`` once the session is refused."""
    node = request.app[NODE_KEY]
    first = await _fan_out(request, "/dashboard/api/snapshot?history=1")
    if isinstance(first, web.Response):
        return first
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        await resp.write(_sse("init", merge_snapshot(node, first)))
        while not node.closing:
            await asyncio.sleep(node.config.ops.sample_interval_s)
            answers = await _fan_out(request, "/dashboard/api/snapshot")
            if isinstance(answers, web.Response):
                await resp.write(b"event: logout\ndata: {}\n\n")
                break
            await resp.write(_sse("sample", merge_snapshot(node, answers)))
    except (ConnectionError, RuntimeError):
        pass  # the viewer went away
    return resp


def _sse(event: str, data: dict[str, Any]) -> bytes:
    text = dumps_strict(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()


CLUSTER_VIEW_METRICS = ("syncclass_node_lessons", "syncclass_node_classrooms",
                        "syncclass_node_cpu_percent", "syncclass_node_heartbeat_age_seconds")
"""Families of the cluster registry (every node's load, :mod:`mixer.cluster`): every worker
of a node reads the same registry, so the front shows them once, from one worker."""


async def metrics(request: web.Request) -> web.StreamResponse:
    """Every worker's metrics with a ``worker`` label, and the node's own
    (``syncclass_node_worker_*``). Each worker checks the credential as before."""
    answers = await _fan_out(request, "/metrics")
    if isinstance(answers, web.Response):
        return answers
    families = merge_metrics(request.app[NODE_KEY], answers)

    class _Collector:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def merge_metrics(node: Node, answers: list[tuple[Worker, Any]]) -> dict[str, Metric]:
    """The workers' ``/metrics`` texts as one node's families: each sample with its
    ``worker`` label (a classroom's from the worker serving it), the cluster registry's
    once (:data:`CLUSTER_VIEW_METRICS`, from the first worker that answered), and the
    node's own ``syncclass_node_worker_*``."""
    families: dict[str, Metric] = {}
    viewed: set[str] = set()
    for w, text in answers:
        if not isinstance(text, str):
            continue
        for fam in text_string_to_metric_families(text):
            if fam.name in CLUSTER_VIEW_METRICS:
                if fam.name not in viewed:
                    viewed.add(fam.name)
                    families[fam.name] = fam
                continue
            merged = families.setdefault(fam.name, Metric(fam.name, fam.documentation,
                                                          fam.type, fam.unit))
            for s in fam.samples:
                cid = s.labels.get("classroom")
                if cid is not None and node.metrics_owner(cid) != w.index:
                    continue  # every worker lists every classroom: its serving worker's
                merged.add_sample(s.name, {**s.labels, "worker": str(w.index)}, s.value,
                                  s.timestamp, s.exemplar)
    for name, doc, typ, value_of in (
        ("syncclass_node_worker_up", "1 while the media worker serves", "gauge",
         lambda w: 1.0 if w.up else 0.0),
        ("syncclass_node_worker_restarts", "Restarts of the media worker", "counter",
         lambda w: float(w.restarts)),
        ("syncclass_node_worker_live_lessons", "Live lessons on the media worker", "gauge",
         lambda w: float(len(w.info()["lessons"]))),
        ("syncclass_node_worker_cpu_percent", "CPU % of the worker process (100 = a core)",
         "gauge", lambda w: w.cpu_percent if w.cpu_percent is not None else float("nan")),
        ("syncclass_node_worker_rss_bytes", "Resident memory of the worker process",
         "gauge", lambda w: float(w.rss_bytes or 0)),
    ):
        fam = Metric(name, doc, typ)
        suffix = "_total" if typ == "counter" else ""
        for w in node.workers:
            fam.add_sample(name + suffix, {"worker": str(w.index)}, value_of(w))
        families[name] = fam
    return families


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.json_response({"ok": True, "workers_up": sum(w.up for w in node.workers),
                              "workers": len(node.workers)})


async def readyz(request: web.Request) -> web.Response:
    """200 while every worker is ready (each answers its ``/readyz``)."""
    node = request.app[NODE_KEY]
    parts = []
    for w in node.workers:
        try:
            status, body = await node.worker_json(w, "/readyz", {}, wait_s=2.0)
        except WorkerUnavailable:
            status, body = 503, None
        parts.append({"worker": w.index, "ready": status == 200,
                      **(body if isinstance(body, dict) else {})})
    ready = not node.closing and all(p["ready"] for p in parts)
    return web.json_response({"ready": ready, "workers": parts}, status=200 if ready else 503)


def create_front_app(node: Node) -> web.Application:
    """The node's public app (serve it with :class:`mixer.guard.GuardedAppRunner`); it
    starts and stops ``node``'s workers with the app."""
    app = web.Application(client_max_size=node.config.mixer.max_message_bytes,
                          handler_args={"access_log_class": RedactingAccessLogger})
    app[NODE_KEY] = node
    # Connection limits of the public port (GuardedAppRunner); credentials are the workers'.
    guard = setup_guard(app, node.front)
    node.guard_stats = guard.stats

    async def lifecycle(app: web.Application) -> Any:
        await node.start()
        yield
        await node.aclose()

    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_get("/ws", ws_front)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/lessons", _merged("/api/lessons", merge_lessons))
    r.add_get("/api/stats", _merged("/api/stats", merge_stats))
    r.add_get("/api/recorder", _merged("/api/recorder", merge_by_worker))
    r.add_get("/api/observers", _merged("/api/observers", merge_by_worker))
    r.add_get("/dashboard/api/snapshot", _merged("", merge_snapshot))
    r.add_get("/dashboard/events", dashboard_events)
    r.add_post("/dashboard/logout", logout)
    r.add_route("*", "/{tail:.*}", proxy)
    return app


