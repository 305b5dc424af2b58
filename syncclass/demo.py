"""Run a whole lesson on one machine: a mixer and classroom agents as real processes.

:class:`LocalDeployment` starts and stops the processes (the integration tests use it
too); :func:`run_demo` holds one lesson and reports where its outputs are.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import yaml

from .config import CountyConfig, load_config
from .protocol import dumps_strict

if TYPE_CHECKING:
    from .netem import NamespaceLink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, method: str = "GET", body: dict[str, Any] | None = None,
              token: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """A small blocking JSON HTTP call (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    control_port: int | None = None
    ps: psutil.Process | None = None

    def cpu_s(self) -> float:
        """CPU seconds of the process and its live children (a mixer node's workers)."""
        if self.ps is None:
            self.ps = psutil.Process(self.popen.pid)
        total = 0.0
        with contextlib.suppress(psutil.Error):
            for ps in (self.ps, *self.ps.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    t = ps.cpu_times()
                    total += t.user + t.system
        return total


@dataclass
class LocalDeployment:
    """A mixer plus agents on this machine, each a ``python -m syncclass`` process."""

    config_path: Path
    work_dir: Path
    port: int = 0
    log_level: str = "info"
    procs: dict[str, Proc] = field(default_factory=dict)
    config: CountyConfig = field(init=False)
    recorder_endpoint: str = ""
    """ZeroMQ endpoint between this mixer and its recorder (default: a free local port, so
    deployments running side by side do not collide)."""
    ops_token: str = ""
    """Bearer token of the mixer's read APIs (``ops.api_token``; default: a fresh one,
    given to the mixer process in ``SYNCCLASS_OPS_API_TOKEN``)."""

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)
        self.port = self.port or free_port()
        self.recorder_endpoint = self.recorder_endpoint or f"tcp://127.0.0.1:{free_port()}"
        self.ops_token = self.ops_token or self.config.ops.api_token or secrets.token_urlsafe(24)
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        _exit_on_sigterm()

    @property
    def mixer_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str], control_port: int | None = None,
               wrap: Callable[[list[str]], list[str]] | None = None) -> Proc:
        log = self.work_dir / "logs" / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args[0] in ("mixer", "media-server"):
            env["SYNCCLASS_OPS_API_TOKEN"] = self.ops_token
        argv = [sys.executable, "-m", "syncclass", "--log-level", self.log_level, *args]
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                wrap(argv) if wrap is not None else argv,
                stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
            )
        proc = Proc(name, popen, log, control_port)
        self.procs[name] = proc
        return proc

    def start_mixer(self, timeout: float = 20.0) -> Proc:
        args = ["mixer", "--config", str(self.config_path), "--port", str(self.port),
                "--recorder-endpoint", self.recorder_endpoint]
        relative = "mixer.data_dir" in self.config.relative_paths
        if relative or not Path(self.config.mixer.data_dir).is_absolute():
            # A relative data_dir would be shared by every deployment started from the same
            # directory (persisted lessons of one would be resumed by another).
            args += ["--data-dir", str(self.work_dir / "mixer-data")]
        proc = self._spawn("mixer", args)
        self.wait_for(lambda: self._healthy(), timeout, "mixer /healthz", proc)
        return proc

    def start_recorder(self, out_dir: Path | None = None, extra: list[str] | None = None,
                       name: str = "recorder") -> Proc:
        """A ``syncclass recorder`` subscribed to this deployment's mixer. Its segments and
        finished lessons go to ``out_dir`` (default ``<work_dir>/recorder``) and the local
        archive to ``<out_dir>/archive`` unless ``extra`` says otherwise."""
        out = out_dir or self.work_dir / "recorder"
        args = ["recorder", "--config", str(self.config_path),
                "--recorder-endpoint", self.recorder_endpoint, "--out", str(out / "lessons"),
                "--archive-dir", str(out / "archive"), "--spool-dir", str(out / "spool")]
        return self._spawn(name, args + (extra or []))

    def start_media_server(self, recorder_dir: Path | None = None,
                           extra: list[str] | None = None, timeout: float = 20.0
                           ) -> tuple[Proc, str]:
        """A ``syncclass media-server`` serving the recorder's lessons (``recorder_dir`` as
        given to :meth:`start_recorder`); returns it and its base URL once it answers."""
        out = recorder_dir or self.work_dir / "recorder"
        port = free_port()
        args = ["media-server", "--config", str(self.config_path), "--port", str(port),
                "--live-dir", str(out / "lessons"), "--archive-dir", str(out / "archive"),
                "--data-dir", str(out / "media-server")]
        if not Path(self.config.mixer.data_dir).is_absolute():  # as start_mixer gives it
            args += ["--mixer-data-dir", str(self.work_dir / "mixer-data")]
        proc = self._spawn("media-server", args + (extra or []))
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with contextlib.suppress(OSError):
                return http_json(url + "/healthz", timeout=1.0)[0] == 200
            return False

        self.wait_for(up, timeout, "media server /healthz", proc)
        return proc, url

    def recorder_status(self) -> dict[str, Any]:
        """The mixer's view of recording: publisher counters, recorders, their reports."""
        return dict(http_json(self.mixer_url + "/api/recorder", token=self.ops_token)[1])

    def _healthy(self) -> bool:
        with contextlib.suppress(OSError):
            return http_json(self.mixer_url + "/healthz", timeout=1.0)[0] == 200
        return False

    def start_agent(self, classroom_id: str, out_dir: Path | None = None,
                    token: str | None = None, extra: list[str] | None = None,
                    wrap: Callable[[list[str]], list[str]] | None = None) -> Proc:
        """A ``syncclass agent`` for ``classroom_id``; ``wrap`` rewrites its command line
        (benchmarks run a variant of the agent this way)."""
        control_port = free_port()
        args = ["agent", "--config", str(self.config_path), "--classroom", classroom_id,
                "--mixer-url", self.mixer_url, "--control-port", str(control_port)]
        if out_dir is not None:
            args += ["--out", str(out_dir)]
        if token is not None:
            args += ["--token", token]
        return self._spawn(classroom_id, args + (extra or []), control_port, wrap)

    def start_agent_behind(self, link: NamespaceLink, classroom_id: str, config_path: Path,
                           out_dir: Path | None = None) -> Proc:
        """An agent inside ``link``'s network namespace (``config_path`` from
        :func:`write_link_configs`), reaching the mixer at the link's host address. Its
        control page is only reachable from inside: use ``link.call_in_ns``."""
        control_port = free_port()
        args = ["agent", "--config", str(config_path), "--classroom", classroom_id,
                "--mixer-url", f"http://{link.host_addr}:{self.port}",
                "--control-port", str(control_port)]
        if out_dir is not None:
            args += ["--out", str(out_dir)]
        return self._spawn(classroom_id, args, control_port, wrap=link.ns_command)

    def agent_status(self, classroom_id: str) -> dict[str, Any]:
        port = self.procs[classroom_id].control_port
        status, body = http_json(f"http://127.0.0.1:{port}/api/status", timeout=2.0)
        if status != 200:
            raise RuntimeError(f"agent {classroom_id} status {status}: {body}")
        return dict(body)

    def agent_post(self, classroom_id: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to an agent's control page ``/api/<action>``."""
        port = self.procs[classroom_id].control_port
        return http_json(f"http://127.0.0.1:{port}/api/{action}", method="POST", body=body,
                         timeout=10.0)

    def agent_command(self, classroom_id: str, action: str) -> tuple[int, Any]:
        port = self.procs[classroom_id].control_port
        return http_json(f"http://127.0.0.1:{port}/api/{action}", method="POST", body={},
                         timeout=10.0)

    def mixer_status(self) -> dict[str, Any]:
        return dict(http_json(self.mixer_url + "/api/lessons", token=self.ops_token)[1])

    def mixer_stats(self) -> dict[str, Any]:
        return dict(http_json(self.mixer_url + "/api/stats", token=self.ops_token)[1])

    def wait_for(self, predicate: Any, timeout: float, what: str,
                 proc: Proc | None = None, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) while "
                                   f"waiting for {what}; log: {proc.log}\n{self.tail(proc)}")
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                if predicate():
                    return
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def tail(self, proc: Proc, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(proc.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def write_logs(self, lines: int = 40) -> None:
        """The last ``lines`` of every process's log on stderr (a failed test or run)."""
        for proc in list(self.procs.values()):
            sys.stderr.write(f"--- {proc.name} log ---\n{self.tail(proc, lines)}\n")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.popen.poll() is None:
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        return proc.popen.returncode

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "mixer"]:
            self.stop(name)
        self.stop("mixer")

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def write_link_configs(data: dict[str, Any], link: NamespaceLink,
                       tmp: Path) -> tuple[Path, Path]:
    """County configs (from the county ``data``) for a lesson with one classroom behind
    ``link``: the mixer's, listening on every address and offering loopback and the link's
    host address as ICE candidates, and the namespaced agent's, offering the namespace
    address. Written as ``tmp/county.yaml`` and ``tmp/county-ns.yaml``."""
    data = copy.deepcopy(data)
    data["mixer"]["host"] = "0.0.0.0"  # reachable from the namespace at link.host_addr
    data["mixer"]["ice_host_addresses"] = ["127.0.0.1", link.host_addr]
    data["mixer"]["data_dir"] = str(tmp / "mixer-data")
    main = tmp / "county.yaml"
    main.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    data["mixer"]["ice_host_addresses"] = [link.ns_addr]
    ns = tmp / "county-ns.yaml"
    ns.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return main, ns


def _exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a CI timeout) ends this process like Ctrl-C does, through its
    ``finally`` blocks, so a deployment stops its mixer, recorder and agents instead of
    leaving them running. Only from the main thread, and only over the default handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _fmt(v: Any) -> str:
    return "–" if v is None else str(v)


def _print_directing(report_json: str | None) -> None:
    """The automatic directing's switches and who was featured how long (from the lesson
    report)."""
    if not report_json or not Path(report_json).is_file():
        return
    directing = json.loads(Path(report_json).read_text(encoding="utf-8")).get("directing") or {}
    switches = directing.get("switches") or []
    print(f"\nDirecting (导播) of the students' view: {directing.get('count', 0)} switch(es), "
          f"courseware large {directing.get('courseware_s', 0):g} s")
    for sw in switches:
        m, sec = divmod(float(sw["lesson_s"]), 60)
        print(f"  {int(m):d}:{sec:04.1f}  {sw['active']:<14}"
              f"{'+ courseware' if sw['courseware'] else '':<14}{sw['reason']}")
    featured = directing.get("featured_s") or {}
    if featured:
        print("  featured: " + ", ".join(f"{k} {v:g} s" for k, v in featured.items()))


def run_demo(config_path: Path, duration_s: float, out_dir: Path, port: int = 0,
             log_level: str = "info") -> int:
    """Hold one lesson of ``duration_s`` and print where the outputs are."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rooms_dir = out_dir / "classrooms"
    with LocalDeployment(config_path, out_dir, port, log_level) as dep:
        config = dep.config
        pairing = config.pairings[0]
        members = [pairing.main, *pairing.receiving]
        print(f"syncclass demo: mixer on {dep.mixer_url}, classrooms {', '.join(members)}")
        dep.start_mixer()
        dep.start_recorder(out_dir / "recorder")
        for cid in members:
            dep.start_agent(cid, out_dir=rooms_dir)
        dep.wait_for(lambda: set(members) <= set(dep.mixer_status()["classrooms"]), 30,
                     "all classrooms connected")
        cpu0 = {n: p.cpu_s() for n, p in dep.procs.items()}
        # The teacher presses Start lesson on the main classroom's control page.
        status, lesson = dep.agent_command(pairing.main, "start")
        if status != 200:
            print(f"syncclass demo: start failed: {lesson}", file=sys.stderr)
            return 1
        print(f"syncclass demo: lesson {lesson['lesson_id']} live "
              f"({lesson['subject']} {lesson['grade']}, {lesson['teacher']}) for {duration_s:g} s")
        t0 = time.monotonic()
        # The teacher shares the courseware (共享课件) for the middle third of the lesson:
        # the students' view and the recording show it large, then the teacher again.
        share = config.classroom(pairing.main).devices.courseware.kind != "none"
        for at, on in ((duration_s / 3, True), (2 * duration_s / 3, False)) if share else ():
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            status, reply = dep.agent_post(pairing.main, "courseware", {"on": on})
            if status != 200:
                print(f"syncclass demo: courseware {'start' if on else 'stop'} failed: {reply}",
                      file=sys.stderr)
        time.sleep(max(0.0, t0 + duration_s - time.monotonic()))
        elapsed = time.monotonic() - t0
        cpu1 = {n: p.cpu_s() for n, p in dep.procs.items()}
        stats = dep.mixer_stats()
        status, _ = dep.agent_command(pairing.main, "end")
        dep.wait_for(
            lambda: all((rooms_dir / f"{cid}.json").exists() for cid in members), 20,
            "classroom summaries",
        )
        summaries = {cid: json.loads((rooms_dir / f"{cid}.json").read_text()) for cid in members}
        # The recorder finalises the lesson (MP4, poster, metadata) and archives it.
        lesson_id = lesson["lesson_id"]
        recording: dict[str, Any] = {}
        try:
            dep.wait_for(lambda: lesson_id in dep.recorder_status()["ready"], 120,
                         "the lesson recording")
            recording = dep.recorder_status()["ready"][lesson_id]
        except TimeoutError as exc:
            print(f"syncclass demo: no recording: {exc}; see {out_dir / 'logs'}",
                  file=sys.stderr)
        # The mixer writes the lesson report (attendance, speech, S-T) when the lesson ends.
        lesson_report: dict[str, Any] = {}
        report_url = f"{dep.mixer_url}/api/reports/{lesson_id}"
        main_token = config.classroom(pairing.main).token
        try:
            dep.wait_for(lambda: http_json(report_url, token=main_token)[1].get("ready"), 30,
                         "the lesson report")
            lesson_report = http_json(report_url, token=main_token)[1]
        except TimeoutError as exc:
            print(f"syncclass demo: no lesson report: {exc}", file=sys.stderr)
        cpu = {n: round(100.0 * (cpu1[n] - cpu0[n]) / elapsed, 1) for n in cpu1}
        report = {
            "lesson": lesson,
            "duration_s": round(elapsed, 1),
            "cpu_percent_of_one_core": cpu,
            "classrooms": summaries,
            "mixer": stats,
            "recording": recording,
        }
        report_path = out_dir / "demo-summary.json"
        report_path.write_text(dumps_strict(report, indent=2, ensure_ascii=False))

    print("\nGlass-to-glass latency (capture → mixer → decoded), ms:")
    print(f"  {'receiver':<14}{'source':<14}{'p50':>8}{'p95':>8}{'frames':>8}{'fps':>7}")
    for cid, s in summaries.items():
        for src, lat in s["latency_ms"].items():
            print(f"  {cid:<14}{src:<14}{_fmt(lat.get('p50_ms')):>8}{_fmt(lat.get('p95_ms')):>8}"
                  f"{lat['frames_read']:>8}{s['fps']:>7}")
    print("\nCPU, % of one core during the lesson:")
    for name, pct in cpu.items():
        print(f"  {name:<14}{pct:>6}")
    print("\nOutputs:")
    for cid, s in summaries.items():
        print(f"  {cid}: view {s.get('png')}  summary {rooms_dir / (cid + '.json')}")
    locations = recording.get("locations", {})
    print(f"  lesson video: {locations.get('lesson.mp4', '(not recorded)')}")
    if locations:
        print(f"  lesson metadata: {locations.get('metadata.json')}  poster: "
              f"{locations.get('poster.jpg')}")
    paths = lesson_report.get("paths") or {}
    _print_directing(paths.get("json"))
    if paths:
        print(f"  lesson report: {paths.get('html')}  json: {paths.get('json')}  "
              f"csv: {paths.get('csv')}")
        if paths.get("beside_recording"):
            print(f"  lesson report beside the recording: {paths['beside_recording']}")
    else:
        print("  lesson report: (not written)")
    print(f"  demo summary: {report_path}")
    print(f"  logs: {out_dir / 'logs'}")
    return 0
