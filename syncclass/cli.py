"""The ``syncclass`` command: ``mixer``, ``agent``, ``lesson``, ``demo``, ``check-config``.

This module and :mod:`syncclass.demo` are the process entry points; they import the
I/O packages (``mixer``, ``edge_agent``, ``recorder``) lazily so the core stays importable
alone. Imports inside a command say why: ``# optional: per command`` (each command loads
only its own service: an agent PC never imports the mixer) or ``# optional: media only``
(aiortc, about half a second to import, only for the commands that run media).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import getpass
import json
import logging
import pickle
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from .auth import hash_password
from .config import CountyConfig, RecorderConfig, default_config_path, load_config
from .config_check import check_paths
from .demo import http_json, run_demo
from .errors import ConfigError, DeviceError, SyncClassError
from .protocol import dumps_strict
from .redact import redact_url
from .sharelinks import sign_share
from .switches import Switches
from .tokens import SigningKey, issue_token
from .workers import recorder_endpoints, resolve_workers

logger = logging.getLogger("syncclass")


def _setup_logging(level: str, json_logs: bool) -> None:
    if json_logs:

        class JsonFormatter(logging.Formatter):
            # Lesson/classroom: from ``extra=`` when given, else the per-object log prefix
            # convention ("classroom <id>: ...", "lesson <id>: ...").
            _prefix = re.compile(r"\b(lesson|classroom) ([A-Za-z0-9][A-Za-z0-9_-]*)(?=:|\s*$)")

            def format(self, record: logging.LogRecord) -> str:
                msg = record.getMessage()
                out: dict[str, object] = {
                    "ts": round(record.created, 3),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": msg,
                }
                for kind, value in self._prefix.findall(msg):
                    out.setdefault(f"{kind}_id", value)
                for key in ("lesson_id", "classroom_id", "alert"):
                    value = getattr(record, key, None)
                    if value is not None:
                        out[key] = value
                if record.exc_info:
                    out["exc"] = self.formatException(record.exc_info)
                return json.dumps(out, ensure_ascii=False, default=str)

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            force=True,
        )
    # aiortc/aioice are chatty at INFO.
    for name in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _tune_aiortc(config: CountyConfig, switches: Switches) -> None:
    """Our jitter buffers in every receiver of this process, and the configured Opus
    bitrate and a numpy audio level in every audio sender. For side-by-side measurement
    ``SYNCCLASS_AUDIO_LEVEL=stock`` (aiortc's Python loop),
    ``SYNCCLASS_JITTER_BUFFER=stock`` (or ``video`` / ``audio``: only that one of ours) and
    ``SYNCCLASS_VIDEO_HOLE_WAIT_S`` (seconds; ``inf``: holes wait as in stock aiortc).
    Video NACKs and resends are bounded (:mod:`syncclass.nack`; ``SYNCCLASS_NACK=stock``:
    aiortc's). With ``media.adaptation.estimator: gcc`` every peer negotiates
    transport-wide feedback (:mod:`syncclass.transportcc`). The switches:
    :mod:`syncclass.switches`."""
    # aiortc-heavy modules load only for the commands that run media.
    from syncclass.nack import use_bounded_nacks  # optional: media only
    from syncclass.rtc import (  # optional: media only
        VIDEO_HOLE_WAIT_S,
        install_low_latency_jitter_buffers,
        use_fast_audio_level,
        use_opus_bitrate,
    )

    use_opus_bitrate(config.media.audio_bitrate_kbps)
    if switches.audio_level != "stock":
        use_fast_audio_level()

    hole_wait_s = switches.video_hole_wait_s
    install_low_latency_jitter_buffers(
        video=switches.video_jitter_buffer, audio=switches.audio_jitter_buffer,
        hole_wait_s=VIDEO_HOLE_WAIT_S if hole_wait_s is None else hole_wait_s)
    if switches.nack != "stock":
        use_bounded_nacks()
    adaptation = config.media.adaptation
    if adaptation.enabled and adaptation.estimator == "gcc":
        from syncclass.adapt import estimate_ceiling_kbps  # optional: media only
        from syncclass.gcc import GccConfig  # optional: media only
        from syncclass.transportcc import install_transport_cc  # optional: media only

        install_transport_cc(GccConfig(start_kbps=float(adaptation.start_kbps),
                                       max_kbps=estimate_ceiling_kbps(
                                           config.media.bitrate_kbps,
                                           config.media.uplink_bitrate_kbps)))


def _tune_mixer_aiortc(switches: Switches) -> None:
    """The mixer receives an audio stream per classroom: decode each Opus frame to mono on
    the event loop as it arrives instead of handing it to a thread per receiver and back
    (``SYNCCLASS_AUDIO_DECODE=thread``: aiortc's decoder threads, for side by side)."""
    # aiortc-heavy: loads only for the mixer command.
    from syncclass.rtc import use_inline_audio_decoding  # optional: media only

    if switches.audio_decode != "thread":
        use_inline_audio_decoding()


def _config(args: argparse.Namespace) -> CountyConfig:
    return load_config(args.config or default_config_path())


def _tune_gc(switches: Switches) -> None:
    """Media processes allocate many short-lived objects per packet; with CPython's default
    thresholds the cyclic GC took ~15% of the mixer's event loop (py-spy --native). Freeze
    what start-up allocated and collect the young generation less often
    (``SYNCCLASS_GC=default``: CPython's thresholds)."""
    if switches.gc == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _tune_opencv(switches: Switches) -> None:
    """One OpenCV thread. Its worker pool (one thread per core) spins while it waits for
    work: composing the two 1 + 8 views (scaling nine 720p pictures) cost 15.2 / 16.8 CPU ms
    per tick with the default two threads against 10.4 / 9.3 ms with one, for 7.7 vs
    9.3-10.4 ms of wall time. Our media processes already run composition, encoders and
    decoders in threads of their own on a small machine. ``SYNCCLASS_CV_THREADS``: another
    count (``default``: OpenCV's)."""
    if switches.cv_threads is None:
        return
    import cv2

    cv2.setNumThreads(switches.cv_threads)


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]],
                      switches: Switches) -> None:
    _tune_gc(switches)
    _tune_opencv(switches)
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(runner())
    except ImportError:  # Windows classroom PCs
        asyncio.run(runner())


# -- token ----------------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    """``syncclass token issue``: print a signed token for a classroom's agent."""
    config = _config(args)
    if not config.mixer.token_keys:
        print("syncclass token: the config has no mixer.token_keys", file=sys.stderr)
        return 2
    try:
        config.classroom(args.classroom)
    except KeyError:
        print(f"syncclass token: unknown classroom {args.classroom!r}", file=sys.stderr)
        return 2
    if not 0 < args.days <= 3660:
        print("syncclass token: --days must be in (0, 3660]", file=sys.stderr)
        return 2
    first = config.mixer.token_keys[0]
    expires = int(time.time() + args.days * 86400)
    print(issue_token(SigningKey(first.id, first.secret.encode()), args.classroom, expires))
    return 0


# -- mixer ----------------------------------------------------------------------------------
def cmd_mixer(args: argparse.Namespace) -> int:
    from aiohttp import web

    from mixer.app import create_app  # optional: per command
    from mixer.guard import GuardedAppRunner  # optional: per command
    from mixer.node import Node, create_front_app  # optional: per command
    from mixer.tls import server_ssl_context  # optional: per command

    setup = _mixer_setup(args)
    if setup is None:
        return 2
    config, switches = setup
    host = args.host or config.mixer.host
    port = config.mixer.port if args.port is None else args.port
    if (config.mixer.cluster is not None and args.workers is not None
            and args.workers != config.mixer.workers):
        # Recorders subscribe to mixer.workers endpoints of every node: another count here
        # would publish lessons on endpoints no recorder follows (or follow dead ones).
        print(f"syncclass mixer: --workers {args.workers}: every node of mixer.cluster runs "
              f"mixer.workers ({config.mixer.workers}) media workers, the count recorders "
              "subscribe to; change mixer.workers in the config for every node instead",
              file=sys.stderr)
        return 2
    workers = resolve_workers(config.mixer.workers if args.workers is None else args.workers)
    if workers and config.recorder.enabled:
        try:  # every worker's recorder endpoint can be made (before anything starts)
            recorder_endpoints(config.recorder.endpoint, workers)
        except ValueError as exc:
            raise ConfigError(f"recorder.endpoint: {exc}") from None
    ssl_context = server_ssl_context(config.mixer.tls) if config.mixer.tls else None

    async def main(stop: asyncio.Event) -> None:
        if workers:
            # A node: this process is the signaling/HTTP front, lessons run in workers.
            command = [sys.executable, "-m", "syncclass", "--log-level", args.log_level,
                       *(["--log-json"] if args.log_json else []), "mixer-worker"]
            node = Node(config, workers, command)
            app = create_front_app(node)
        else:
            app = create_app(config, resume_lessons=True, node_id=args.node_id)
        # Header deadline and per-address connection cap (slow-loris): mixer.guard.
        runner = GuardedAppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        logger.info("mixer listening on %s://%s:%d (county %s, %s)", scheme, host, port,
                    config.county, f"{workers} media workers" if workers else "one process")
        try:
            await stop.wait()
        finally:
            logger.info("mixer stopping")
            await runner.cleanup()

    _run_until_signal(main, switches)
    return 0


def _mixer_setup(args: argparse.Namespace) -> tuple[CountyConfig, Switches] | None:
    """The mixer's config with command-line and environment overrides, and the process
    tuning both a mixer and its media workers need; None after a refusal printed."""
    from mixer.memory import limit_malloc_arenas  # optional: per command
    from syncclass.liveness import tighten_ice_consent  # optional: media only
    from syncclass.rtc import use_host_addresses  # optional: media only

    limit_malloc_arenas()  # before any worker thread: lessons' memory goes back to the OS
    config = _config(args)
    switches = Switches.from_environ()
    use_host_addresses(config.mixer.ice_host_addresses)
    _tune_aiortc(config, switches)
    _tune_mixer_aiortc(switches)
    if config.mixer.cluster is not None:
        from mixer.cluster import node_of  # optional: per command

        node = node_of(config, args.node_id)  # ConfigError in words: no or unknown node
        args.node_id = node.id
        # In the config too: media workers get the config, and beat for this node.
        config = config.model_copy(update={"mixer": config.mixer.model_copy(update={
            "cluster": config.mixer.cluster.model_copy(update={"node_id": node.id})})})
        if node.recorder_endpoint and not args.recorder_endpoint:
            args.recorder_endpoint = node.recorder_endpoint
    elif args.node_id:
        print("syncclass mixer: --node-id needs a mixer.cluster section in the config",
              file=sys.stderr)
        return None
    config = _with_recorder_args(config, args)
    if args.data_dir:
        config = config.model_copy(update={"mixer": config.mixer.model_copy(
            update={"data_dir": args.data_dir})})
    api_token = switches.ops_api_token
    if api_token:  # a secret: from the environment, never the command line
        if len(api_token) < 16:
            print("syncclass mixer: SYNCCLASS_OPS_API_TOKEN must have 16+ characters",
                  file=sys.stderr)
            return None
        config = config.model_copy(update={"ops": config.ops.model_copy(
            update={"api_token": api_token})})
    tighten_ice_consent(config.mixer.ice_consent_interval_s, config.mixer.ice_consent_failures)
    return config, switches


def cmd_mixer_worker(args: argparse.Namespace) -> int:
    """One media worker of a node (started by ``syncclass mixer``): its config, index and
    socket come from the front over stdin; it stops when stdin closes."""
    from mixer.memory import limit_malloc_arenas  # optional: per command
    from mixer.node import (  # optional: per command
        read_worker_handoff,
        serve_worker,
        stop_on_stdin_eof,
    )
    from syncclass.liveness import tighten_ice_consent  # optional: media only
    from syncclass.rtc import use_host_addresses  # optional: media only

    if sys.stdin.isatty():
        print("syncclass mixer-worker: started by 'syncclass mixer' (mixer.workers), which "
              "passes it its config on stdin", file=sys.stderr)
        return 2
    limit_malloc_arenas()
    try:
        config, index, socket_path = read_worker_handoff()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        print(f"syncclass mixer-worker: no handoff from the front on stdin ({exc!r})",
              file=sys.stderr)
        return 2
    switches = Switches.from_environ()
    use_host_addresses(config.mixer.ice_host_addresses)
    _tune_aiortc(config, switches)
    _tune_mixer_aiortc(switches)
    tighten_ice_consent(config.mixer.ice_consent_interval_s, config.mixer.ice_consent_failures)

    async def main(stop: asyncio.Event) -> None:
        stop_on_stdin_eof(stop)
        await serve_worker(config, index, socket_path, stop)

    _run_until_signal(main, switches)
    return 0


def _workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 (one process), 1-64 or 'auto'")
    return value


def _with_recorder_args(config: CountyConfig, args: argparse.Namespace) -> CountyConfig:
    """``recorder`` section of the config with command-line overrides applied."""
    update = {k: v for k, v in {
        "endpoint": getattr(args, "recorder_endpoint", None),
        "out_dir": getattr(args, "out", None),
        "archive_dir": getattr(args, "archive_dir", None),
        "spool_dir": getattr(args, "spool_dir", None),
    }.items() if v is not None}
    if not update:
        return config
    try:  # validated again: a new endpoint may need keys (RecorderConfig.bus_problem)
        recorder = RecorderConfig.model_validate({**dict(config.recorder), **update})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"recorder (with command-line options): {problems}") from None
    return config.model_copy(update={"recorder": recorder})


# -- recorder -------------------------------------------------------------------------------
def cmd_recorder(args: argparse.Namespace) -> int:
    from recorder.service import Recorder  # optional: per command

    config = _with_recorder_args(_config(args), args)
    switches = Switches.from_environ()

    from syncclass.placement import (  # lazy: per command
        recorder_endpoints as node_endpoints,
    )

    # One endpoint per media worker of the mixer's node ('auto': this host's cores, so a
    # recorder on another host needs mixer.workers as a number); with several nodes every
    # node's, unless an explicit --recorder-endpoint names the one mixer to follow.
    try:
        if config.mixer.cluster is None:
            endpoints: list[str] | None = recorder_endpoints(
                config.recorder.endpoint, resolve_workers(config.mixer.workers))
        else:
            endpoints = None if args.recorder_endpoint else node_endpoints(config)
    except ValueError as exc:
        raise ConfigError(f"recorder.endpoint: {exc}") from None

    async def main(stop: asyncio.Event) -> None:
        rec = Recorder(config.recorder, endpoints=endpoints)
        await rec.start()
        try:
            await stop.wait()
        finally:
            logger.info("recorder stopping")
            await rec.aclose()

    _run_until_signal(main, switches)
    return 0


# -- media server ---------------------------------------------------------------------------
def cmd_media_server(args: argparse.Namespace) -> int:
    """``syncclass media-server``: live HLS (and replay) for people outside the lesson."""
    from aiohttp import web

    from media_server.service import create_app  # optional: per command

    config = _with_recorder_args(_config(args), args)
    switches = Switches.from_environ()
    host = args.host or config.media_server.host
    port = config.media_server.port if args.port is None else args.port
    live_dir = Path(args.live_dir or config.media_server.live_dir or config.recorder.out_dir)
    data_dir = Path(args.data_dir or config.media_server.data_dir)
    archive_dir = Path(args.archive_dir or config.recorder.archive_dir)
    mixer_data_dir = Path(args.mixer_data_dir or config.media_server.mixer_data_dir
                          or config.mixer.data_dir)
    api_token = switches.ops_api_token

    async def main(stop: asyncio.Event) -> None:
        runner = web.AppRunner(create_app(config, live_dir, data_dir, api_token, archive_dir,
                                          mixer_data_dir),
                               handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = port
        for s in runner.sites:
            server = getattr(s, "_server", None)
            if server is not None and server.sockets:
                bound = server.sockets[0].getsockname()[1]
        logger.info("media server listening on http://%s:%d (live from %s)", host, bound,
                    live_dir)
        try:
            await stop.wait()
        finally:
            logger.info("media server stopping")
            await runner.cleanup()

    _run_until_signal(main, switches)
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    """``syncclass share``: print a signed, expiring link to one lesson (名师课堂)."""
    config = _config(args)
    secret = (config.media_server.share_secret or "").encode()
    if not secret:
        print("syncclass share: the config has no media_server.share_secret", file=sys.stderr)
        return 2
    seconds = args.hours * 3600
    if not 0 < seconds <= config.media_server.share_max_s:
        print(f"syncclass share: --hours must be in (0, "
              f"{config.media_server.share_max_s / 3600:g}]", file=sys.stderr)
        return 2
    try:
        value = sign_share(secret, args.scope, args.lesson, int(time.time() + seconds))
    except ValueError as exc:
        print(f"syncclass share: {exc}", file=sys.stderr)
        return 2
    base = config.media_server.url.rstrip("/")
    print(f"{base}/{args.scope}/{args.lesson}/?share={value}")
    return 0


# -- agent ----------------------------------------------------------------------------------
def cmd_agent_devices(args: argparse.Namespace) -> int:
    """``syncclass agent devices``: this PC's cameras, microphones and speakers by name."""
    from edge_agent.device_list import list_devices  # optional: per command

    found = list_devices()
    print(found.to_json() if args.json else found.to_text())
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    if args.action == "devices":
        return cmd_agent_devices(args)
    if not args.classroom:
        print("syncclass agent: --classroom is required (or: syncclass agent devices)",
              file=sys.stderr)
        return 2
    from edge_agent.agent import Agent  # optional: per command
    from edge_agent.control import serve_control  # optional: per command
    from syncclass.rtc import use_host_addresses, use_turn_ca_file  # optional: media only

    config = _config(args)
    switches = Switches.from_environ()
    use_host_addresses(config.mixer.ice_host_addresses)
    if config.mixer.turn is not None:
        use_turn_ca_file(config.mixer.turn.ca_file)
    from syncclass.liveness import tighten_ice_consent  # optional: media only

    tighten_ice_consent(config.mixer.ice_consent_interval_s, config.mixer.ice_consent_failures)
    _tune_aiortc(config, switches)
    try:
        room = config.classroom(args.classroom)
    except KeyError:
        known = ", ".join(c.id for c in config.classrooms)
        print(f"syncclass agent: unknown classroom {args.classroom!r} (known: {known})",
              file=sys.stderr)
        return 2
    if args.fallback_to_synthetic:
        devices = room.devices.model_copy(update={"fallback_to_synthetic": True})
        room = room.model_copy(update={"devices": devices})
        rooms = [room if c.id == room.id else c for c in config.classrooms]
        config = config.model_copy(update={"classrooms": rooms})
    exit_code = 0

    async def main(stop: asyncio.Event) -> None:
        nonlocal exit_code
        agent = Agent(config, room.id, mixer_url=args.mixer_url, token=args.token,
                      out_dir=Path(args.out) if args.out else None)
        port = room.control_port if args.control_port is None else args.control_port
        runner, bound = await serve_control(agent, port)
        logger.info("classroom %s: control page http://127.0.0.1:%d/", room.id, bound)
        task = asyncio.create_task(agent.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        agent.stop()
        await task
        stopper.cancel()
        await runner.cleanup()
        if agent.state == "refused":
            exit_code = 3

    try:
        _run_until_signal(main, switches)
    except DeviceError as exc:
        print(f"syncclass agent: {exc}", file=sys.stderr)
        return 4
    if exit_code == 3:
        print("syncclass agent: the mixer refused this classroom's credential", file=sys.stderr)
    return exit_code


# -- lesson -----------------------------------------------------------------------------------
def cmd_lesson(args: argparse.Namespace) -> int:
    import aiohttp

    config = _config(args)
    try:
        room = config.classroom(args.classroom)
    except KeyError:
        print(f"syncclass lesson: unknown classroom {args.classroom!r}", file=sys.stderr)
        return 2
    url = (args.mixer_url or config.mixer.url).rstrip("/") + f"/api/lessons/{args.action}"
    body: dict[str, str] = {"classroom_id": room.id}
    if args.timetable:
        body["timetable_id"] = args.timetable

    async def call() -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as http, http.post(
            url, json=body, headers={"Authorization": f"Bearer {room.token}"}
        ) as resp:
            return resp.status, await resp.json()

    try:
        status, reply = asyncio.run(call())
    except (aiohttp.ClientError, OSError) as exc:
        print(f"syncclass lesson: cannot reach the mixer at {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"syncclass lesson: {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
        return 1
    print(dumps_strict(reply, ensure_ascii=False, indent=2))
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:

    return run_demo(
        config_path=Path(args.config) if args.config else default_config_path(),
        duration_s=args.duration,
        out_dir=Path(args.out),
        port=args.port,
        log_level=args.log_level,
    )


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print an ``ops.users`` entry: the password is read from the terminal (asked twice)
    or, when piped, from the first line of standard input; it never appears in argv."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("syncclass hash-password: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < args.min_length:
        print(f"syncclass hash-password: the password needs at least {args.min_length} "
              "characters", file=sys.stderr)
        return 2
    encoded = hash_password(password)
    if args.user:
        print(f"    - name: {args.user}\n      password_hash: \"{encoded}\"")
    else:
        print(encoded)
    return 0


def cmd_recorder_keys(args: argparse.Namespace) -> int:
    """Print a ``recorder.curve`` section with fresh CURVE keys: the mixer's keypair and one
    keypair per recorder name. The mixer's host keeps ``mixer_secret_key`` and
    ``recorders``; each recorder's host ``mixer_public_key`` and its own secret key."""
    import yaml
    import zmq

    names = args.name or ["recorder-1"]
    if len(set(names)) != len(names):
        print("syncclass recorder-keys: recorder names must differ", file=sys.stderr)
        return 2
    mixer_public, mixer_secret = zmq.curve_keypair()
    pairs = {n: zmq.curve_keypair() for n in names}
    curve = {
        "mixer_public_key": mixer_public.decode(),
        "mixer_secret_key": mixer_secret.decode(),
        "recorders": [{"name": n, "public_key": pub.decode()} for n, (pub, _) in pairs.items()],
        "recorder_secret_key": pairs[names[0]][1].decode(),
    }

    RecorderConfig.model_validate({"curve": curve})  # what we print is what load accepts
    text = yaml.safe_dump({"recorder": {"curve": curve}}, sort_keys=False,
                          default_style=None, allow_unicode=True)
    print("# Secret keys: keep mixer_secret_key on the mixer only; recorder_secret_key is "
          f"{names[0]}'s, for its host only.")
    print(text, end="")
    for n in names[1:]:
        print(f"# {n}'s host: recorder_secret_key: \"{pairs[n][1].decode()}\"")
    return 0


def cmd_courseware(args: argparse.Namespace) -> int:
    """共享课件 from the command line: ask the main classroom's agent (its local control
    page) to start or stop sending the courseware."""
    config = _config(args)
    try:
        room = config.classroom(args.classroom)
    except KeyError:
        print(f"syncclass courseware: unknown classroom {args.classroom!r}", file=sys.stderr)
        return 2
    if args.control_url:
        base = args.control_url.rstrip("/")
    elif room.control_port:
        base = f"http://127.0.0.1:{room.control_port}"
    else:
        print("syncclass courseware: the classroom's control_port is 0 (any free port): "
              "give --control-url as printed by its agent", file=sys.stderr)
        return 2
    url = base + "/api/courseware"
    try:
        status, reply = http_json(url, "POST", {"on": args.action == "start"})
    except OSError as exc:
        print(f"syncclass courseware: cannot reach the agent at {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"syncclass courseware: {reply.get('code')}: {reply.get('message')}",
              file=sys.stderr)
        return 1
    print(json.dumps(reply, ensure_ascii=False))
    return 0


def cmd_hand(args: argparse.Namespace) -> int:
    """Raise a receiving classroom's hand through the mixer's HTTP API."""

    config = _config(args)
    try:
        room = config.classroom(args.classroom)
    except KeyError:
        print(f"syncclass hand: unknown classroom {args.classroom!r}", file=sys.stderr)
        return 2
    url = (args.mixer_url or config.mixer.url).rstrip("/") + "/api/hand"
    try:
        status, reply = http_json(url, "POST", {"classroom_id": room.id}, token=room.token)
    except OSError as exc:
        print(f"syncclass hand: cannot reach the mixer at {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"syncclass hand: {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
        return 1
    print(dumps_strict(reply, ensure_ascii=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Term figures per paired school and subject, against the configured targets."""
    from mixer.report_term import render_csv, render_table, term_figures  # optional: per command
    from mixer.store import ReportStore  # optional: per command

    config = _config(args)
    acfg = config.analytics
    try:
        start = dt.date.fromisoformat(args.from_date) if args.from_date else acfg.term_start
        end = dt.date.fromisoformat(args.to_date) if args.to_date else acfg.term_end
    except ValueError as exc:
        print(f"syncclass report: bad date: {exc} (use YYYY-MM-DD)", file=sys.stderr)
        return 2
    today = dt.date.today()
    start = start or today.replace(month=1 if today.month < 8 else 8, day=1)
    end = end or today
    if args.database:
        url, origin = args.database, "--database"
    elif acfg.database_url:
        url, origin = acfg.database_url, "analytics.database_url"
    else:
        url = f"sqlite:///{(Path(config.mixer.data_dir) / 'analytics.db').resolve()}"
        origin = "mixer.data_dir"
    written = config.relative_paths.get(origin)
    if written:
        origin += f" {written!r}, relative to the config file's folder"
    elif origin == "mixer.data_dir" and not Path(config.mixer.data_dir).is_absolute():
        origin += f" {config.mixer.data_dir!r}, relative to the current directory"
    store = ReportStore(url)
    if not store.exists():
        print(f"syncclass report: no database at {url} (from {origin}); no lesson has been "
              "reported there. Run from the mixer's directory, or give --config of the "
              "mixer's county or --database", file=sys.stderr)
        return 1
    try:
        fig = term_figures(config, store, start, end)
    except ValueError as exc:
        print(f"syncclass report: {exc}", file=sys.stderr)
        return 2
    held = sum(p["lessons"] for p in fig["pairings"])
    print(f"syncclass report: {held} lesson(s) from {start} to {end} read from "
          f"{_without_password(url)} (from {origin})", file=sys.stderr)
    if held == 0:
        print(f"syncclass report: warning: the database has no lessons from {start} to {end}"
              f"; is this the mixer's database (--from/--to, --database)?", file=sys.stderr)
    if args.format == "json":
        text = dumps_strict(fig, ensure_ascii=False, indent=2) + "\n"
    elif args.format in ("csv", "csv-excel"):
        text = render_csv(fig, excel=args.format == "csv-excel")
    else:
        text = render_table(fig)
    if args.out:
        # newline="": the CRLF of csv-excel is written as is.
        Path(args.out).write_text(text, encoding="utf-8", newline="")
        print(f"syncclass report: wrote {args.out}")
    elif args.format == "csv-excel":
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(text)
    return 0


def _without_password(url: str) -> str:
    """A database URL to show: its password (``postgresql://user:secret@host``) and secret
    query parameters hidden (the one redaction rule: :func:`syncclass.redact.redact_url`)."""
    return redact_url(url)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the schema, then the files and folders the config names
    (:mod:`syncclass.config_check`): errors exit 2, warnings are printed."""
    path = args.config or default_config_path()
    config = _config(args)
    findings = check_paths(config)
    errors = [f for f in findings if f.level == "error"]
    if config.relative_paths:
        print(f"{path}: relative paths are read from {Path(path).resolve().parent}")
    for f in findings:
        print(f"{path}: {f}", file=sys.stderr)
    if errors:
        print(f"{path}: {len(errors)} error(s): fix the paths above (or the devices' kind)",
              file=sys.stderr)
        return 2
    print(f"{path}: OK — county {config.county}, "
          f"{len(config.classrooms)} classrooms, {len(config.pairings)} pairings, "
          f"{len(config.timetable)} timetable entries, views {', '.join(config.views)}"
          + (f"; {len(findings)} warning(s)" if findings else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncclass",
        description="Synchronous classrooms (专递课堂): a main classroom teaches rural "
        "classrooms live through a central mixer.",
    )
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-json", action="store_true", help="structured JSON log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="county config YAML (default: the embedded sample county)")

    p = sub.add_parser("mixer", help="run the central mixer (signaling, WebRTC, composition)",
                       description="Run the mixer: classrooms connect to it over WebSocket "
                       "signaling and WebRTC; it composes and encodes each view once.")
    with_config(p)
    p.add_argument("--host", help="listen address (default: mixer.host from the config)")
    p.add_argument("--port", type=int, help="listen port (default: mixer.port; 0 = any)")
    p.add_argument("--recorder-endpoint",
                   help="ZeroMQ endpoint to publish the recording on (default: recorder.endpoint)")
    p.add_argument("--data-dir", help="state and outputs directory (default: mixer.data_dir)")
    p.add_argument("--workers", type=_workers_arg,
                   help="media worker processes: a number, 'auto' (one per core) or 0 (one "
                   "process) (default: mixer.workers)")
    p.add_argument("--node-id", help="several nodes: which of mixer.cluster.nodes this process "
                   "is (default: mixer.cluster.node_id)")
    p.set_defaults(func=cmd_mixer)

    p = sub.add_parser("mixer-worker", help="(internal) one media worker of a mixer node; "
                       "'syncclass mixer' starts them")
    p.set_defaults(func=cmd_mixer_worker)

    p = sub.add_parser("recorder", help="run the lesson recorder (同步录播)",
                       description="Subscribe to the mixer's recorded view and full audio mix, "
                       "write each lesson as crash-safe segments, then a faststart MP4, "
                       "poster and metadata, and archive them (local folder or S3).")
    with_config(p)
    p.add_argument("--recorder-endpoint",
                   help="mixer's ZeroMQ endpoint (default: recorder.endpoint from the config)")
    p.add_argument("--out", help="segments and finished lessons (default: recorder.out_dir)")
    p.add_argument("--archive-dir", help="local archive folder (default: recorder.archive_dir)")
    p.add_argument("--spool-dir", help="pending uploads (default: recorder.spool_dir)")
    p.set_defaults(func=cmd_recorder)

    p = sub.add_parser("media-server", help="serve live HLS and replays (直播 / 点播)",
                       description="Serve every recording lesson's students view as HLS, "
                       "with a watch page, to viewers the pairing's rules or a share link "
                       "allow; runs beside the recorder, never in the mixer.")
    with_config(p)
    p.add_argument("--host", help="bind address (default: media_server.host)")
    p.add_argument("--port", type=int, help="port (default: media_server.port; 0 = any)")
    p.add_argument("--live-dir", help="the recorder's lesson folders (default: "
                   "media_server.live_dir, else recorder.out_dir)")
    p.add_argument("--archive-dir", help="local archive folder (default: recorder.archive_dir)")
    p.add_argument("--data-dir", help="the server's own files (default: media_server.data_dir)")
    p.add_argument("--mixer-data-dir", help="the mixer's reports and comments (default: "
                   "media_server.mixer_data_dir, else mixer.data_dir)")
    p.set_defaults(func=cmd_media_server)

    p = sub.add_parser("share", help="print a signed, expiring link to a lesson",
                       description="Sign a link to one lesson's live stream or replay with "
                       "media_server.share_secret (名师课堂 shared with the public).")
    with_config(p)
    p.add_argument("--lesson", required=True, help="lesson id")
    p.add_argument("--scope", choices=["live", "replay"], default="live")
    p.add_argument("--hours", type=float, default=2.0, help="validity in hours (default 2)")
    p.set_defaults(func=cmd_share)

    p = sub.add_parser("agent", help="run a classroom's edge agent",
                       description="Run a classroom PC's agent: captures camera and mic, joins "
                       "its paired lesson by itself, shows and plays what the mixer sends.")
    with_config(p)
    p.add_argument("action", nargs="?", choices=["run", "devices"], default="run",
                   help="run (default): run the agent; devices: list this PC's cameras, "
                   "microphones and speakers by name and index, for the config")
    p.add_argument("--json", action="store_true", help="devices: print JSON")
    p.add_argument("--classroom", help="classroom id from the config (required to run)")
    p.add_argument("--mixer-url", help="mixer base URL (default: mixer.url from the config)")
    p.add_argument("--token", help="credential (default: the classroom's token in the config)")
    p.add_argument("--control-port", type=int,
                   help="port of the local control page on 127.0.0.1 (0 = any free port)")
    p.add_argument("--out", help="folder for the received-view PNG and JSON summary per lesson")
    p.add_argument("--fallback-to-synthetic", action="store_true",
                   help="use synthetic camera/mic when a configured device is missing")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("lesson", help="start or end the main classroom's lesson",
                       description="Start or end a lesson as the main classroom (uses its "
                       "credential from the config).")
    with_config(p)
    p.add_argument("action", choices=["start", "end"])
    p.add_argument("--classroom", required=True, help="the main classroom's id")
    p.add_argument("--timetable", help="timetable entry id (default: nearest in time)")
    p.add_argument("--mixer-url", help="mixer base URL (default: mixer.url from the config)")
    p.set_defaults(func=cmd_lesson)

    p = sub.add_parser("demo", help="run a whole lesson locally and report",
                       description="Start a mixer and one main + two receiving classroom "
                       "agents with synthetic camera and microphone, hold a lesson, and write "
                       "each classroom's received view (PNG) and a JSON summary.")
    with_config(p)
    p.add_argument("--duration", type=float, default=30.0, help="lesson length in seconds")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--port", type=int, default=0, help="mixer port (default: any free port)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("hash-password", help="hash an ops dashboard password for the config",
                       description="Read a password (asked on the terminal, or the first line "
                       "of standard input) and print its scrypt hash for ops.users in the "
                       "county config.")
    p.add_argument("--user", help="also print the YAML entry for this user name")
    p.add_argument("--min-length", type=int, default=10, help="refuse shorter passwords")
    p.set_defaults(func=cmd_hash_password)

    p = sub.add_parser("hand", help="raise a receiving classroom's hand (举手)",
                       description="Raise a receiving classroom's hand in its live lesson; "
                       "the main classroom's screen shows it (uses the classroom's credential "
                       "from the config).")
    with_config(p)
    p.add_argument("action", choices=["raise"])
    p.add_argument("--classroom", required=True, help="the receiving classroom's id")
    p.add_argument("--mixer-url", help="mixer base URL (default: mixer.url from the config)")
    p.set_defaults(func=cmd_hand)

    p = sub.add_parser("courseware", help="share the teacher's courseware (共享课件) or stop",
                       description="Ask the main classroom's agent, on this PC, to start or "
                       "stop sending its courseware (devices.courseware) as a second video; "
                       "the students' view shows it large.")
    with_config(p)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--classroom", required=True, help="the main classroom's id")
    p.add_argument("--control-url",
                   help="the agent's control page (default: http://127.0.0.1:<control_port>)")
    p.set_defaults(func=cmd_courseware)

    p = sub.add_parser("report", help="term figures for the education bureau",
                       description="Per paired school and subject: synchronous lessons held, "
                       "hours and attendance, compared with analytics.targets.")
    with_config(p)
    p.add_argument("--from", dest="from_date",
                   help="first day YYYY-MM-DD (default: analytics.term_start, else this term)")
    p.add_argument("--to", dest="to_date", help="last day YYYY-MM-DD (default: today)")
    p.add_argument("--format", choices=["table", "csv", "csv-excel", "json"], default="table",
                   help="csv-excel: CSV for Microsoft Excel (UTF-8 with a byte-order mark, "
                   "CRLF), which reads Chinese correctly on a Chinese Windows")
    p.add_argument("--database", help="database URL (default: analytics.database_url, else "
                   "sqlite:///<mixer.data_dir>/analytics.db; relative paths in a config "
                   "file are relative to its folder)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("token", help="issue a signed, expiring classroom credential",
                       description="Sign a classroom token with the county's first "
                       "mixer.token_keys key (v1.<classroom>.<expires>.<key id>.<mac>).")
    with_config(p)
    p.add_argument("action", choices=["issue"])
    p.add_argument("--classroom", required=True, help="classroom id")
    p.add_argument("--days", type=float, default=180.0, help="validity in days (default 180)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("recorder-keys", help="make CURVE keys for the recorder bus",
                       description="Print a recorder.curve config section with a fresh "
                       "keypair for the mixer and one per recorder: only listed recorders "
                       "can then connect to the mixer's recording endpoint.")
    p.add_argument("--name", action="append",
                   help="a recorder's name (repeat for several; default recorder-1)")
    p.set_defaults(func=cmd_recorder_keys)

    p = sub.add_parser("check-config", help="validate a county config",
                       description="Validate a county config: its fields, then that the "
                       "files and folders it names (device files, certificates, the CA file, "
                       "the face cascade, output folders) are there on this machine.")
    with_config(p)
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_json)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"syncclass: invalid config:\n{exc}", file=sys.stderr)
        return 2
    except SyncClassError as exc:
        print(f"syncclass: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
