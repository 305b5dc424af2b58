"""A user-space link emulator for tests: a network namespace joined to this one through
two TUN devices and a forwarder thread that adds delay, jitter, loss and a rate cap.

This kernel has no ``netem`` qdisc, so impairments are applied in user space::

    namespace NS                       this (root) namespace
    app ─► tun "<p>a" 10.99.X.2 ──fd──► forwarder ──fd──► tun "<p>b" 10.99.X.1 ─► mixer
           (point-to-point)             delay/jitter/loss/rate       (point-to-point)

Every IP packet one side sends is read from its TUN fd, delayed (or dropped) and written
to the other TUN fd, so the kernel of the other side receives it. Only the private
addresses of the two TUN devices are used; nothing leaves the machine. Needs root
(``ip netns``, ``/dev/net/tun``). Used by ``tests/integration/test_faults*.py``; not imported by the
product.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import logging
import os
import random
import selectors
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

logger = logging.getLogger(__name__)

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@dataclass
class Impairment:
    """What one direction of the link does to packets."""

    delay_ms: float = 0.0
    """Fixed one-way delay, ms."""
    jitter_ms: float = 0.0
    """Uniform random extra delay in [-jitter, +jitter] ms (order is kept, as on a real
    queue: a packet never overtakes the one before it)."""
    loss_percent: float = 0.0
    """Independent random loss, % of packets."""
    rate_kbps: float = 0.0
    """Serialisation rate cap, kbit/s (0: unlimited)."""
    queue_ms: float = 500.0
    """With a rate cap, packets that would wait longer than this are dropped (tail drop)."""
    down: bool = False
    """Drop everything (cable pulled, PC switched off)."""


@dataclass
class DirectionStats:
    packets: int = 0
    bytes: int = 0
    forwarded: int = 0
    lost: int = 0
    """Dropped by random loss."""
    dropped_down: int = 0
    dropped_queue: int = 0


@dataclass
class _Direction:
    imp: Impairment
    stats: DirectionStats = field(default_factory=DirectionStats)
    last_departure: float = 0.0
    last_due: float = 0.0


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _free_subnet() -> int:
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    candidates = [x for x in range(1, 255) if f" 10.99.{x}." not in used]
    if not candidates:
        raise RuntimeError("no free 10.99.X.0 test subnet")
    return random.choice(candidates)


class EmulatedLink:
    """A namespace reachable from this one over an impaired point-to-point link.

    ``host_addr`` (this side) and ``ns_addr`` (inside :attr:`netns`) are private test
    addresses. :meth:`close` (or the context manager) removes the namespace and devices.
    ``uplink`` impairs packets from the namespace; ``downlink`` packets to it.
    """

    def __init__(self, name: str = "sc", seed: int | None = None) -> None:
        self.subnet = _free_subnet()
        tag = f"{name[:4]}{os.getpid() % 100000}{self.subnet}"[:12]
        self.netns = f"{tag}ns"
        self.ns_dev, self.host_dev = f"{tag}a", f"{tag}b"
        self.host_addr = f"10.99.{self.subnet}.1"
        self.ns_addr = f"10.99.{self.subnet}.2"
        self.uplink = _Direction(Impairment())
        self.downlink = _Direction(Impairment())
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created_ns = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmulatedLink:
        try:
            _run("ip", "netns", "add", self.netns)
            self._created_ns = True
            ns_fd = _open_tun(self.ns_dev)
            self._fds.append(ns_fd)
            host_fd = _open_tun(self.host_dev)
            self._fds.append(host_fd)
            _run("ip", "link", "set", self.ns_dev, "netns", self.netns)
            _run("ip", "-n", self.netns, "addr", "add", self.ns_addr, "peer", self.host_addr,
                 "dev", self.ns_dev)
            _run("ip", "-n", self.netns, "link", "set", self.ns_dev, "up")
            _run("ip", "-n", self.netns, "link", "set", "lo", "up")
            _run("ip", "addr", "add", self.host_addr, "peer", self.ns_addr, "dev", self.host_dev)
            _run("ip", "link", "set", self.host_dev, "up")
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._forward, args=(ns_fd, host_fd),
                                        name=f"netem-{self.netns}", daemon=True)
        self._thread.start()
        logger.info("link %s: %s <-> %s up", self.netns, self.host_addr, self.ns_addr)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # a non-persistent TUN device disappears with its last fd
        self._fds.clear()
        if self._created_ns:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "netns", "del", self.netns)
            self._created_ns = False

    def __enter__(self) -> EmulatedLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control -----------------------------------------------------------------------------
    def impair(self, *, both: Impairment | None = None, uplink: Impairment | None = None,
               downlink: Impairment | None = None) -> None:
        """Change impairments now (``both`` sets the two directions alike)."""
        with self._lock:
            if both is not None:
                uplink = downlink = both
            if uplink is not None:
                self.uplink.imp = Impairment(**vars(uplink))
            if downlink is not None:
                self.downlink.imp = Impairment(**vars(downlink))

    def set_down(self, down: bool) -> None:
        """Pull (``True``) or plug back (``False``) the cable, keeping other impairments."""
        with self._lock:
            self.uplink.imp.down = down
            self.downlink.imp.down = down

    def ns_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def call_in_ns(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on a thread that entered the namespace (its sockets live there)."""
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.netns}", "rb") as fh:
                    if libc.setns(fh.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                result.append(fn())
            except BaseException as exc:  # handed to the caller
                error.append(exc)

        thread = threading.Thread(target=target, name=f"in-{self.netns}", daemon=True)
        thread.start()
        thread.join(timeout)
        if error:
            raise error[0]
        if not result:
            raise TimeoutError(f"call in namespace {self.netns} timed out")
        return result[0]

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"uplink": dict(vars(self.uplink.stats)),
                    "downlink": dict(vars(self.downlink.stats))}

    # -- forwarder ---------------------------------------------------------------------------
    def _schedule(self, d: _Direction, size: int, now: float) -> float | None:
        """Departure time of a packet of ``size`` bytes arriving ``now`` (``None``: drop)."""
        imp, st = d.imp, d.stats
        st.packets += 1
        st.bytes += size
        if imp.down:
            st.dropped_down += 1
            return None
        if imp.loss_percent and self._rng.random() * 100 < imp.loss_percent:
            st.lost += 1
            return None
        start = now
        if imp.rate_kbps > 0:
            start = max(now, d.last_departure)
            if start - now > imp.queue_ms / 1000:
                st.dropped_queue += 1
                return None
            d.last_departure = start + size * 8 / (imp.rate_kbps * 1000)
            start = d.last_departure
        delay = imp.delay_ms + (self._rng.uniform(-imp.jitter_ms, imp.jitter_ms)
                                if imp.jitter_ms else 0.0)
        due = start + max(0.0, delay) / 1000
        due = max(due, d.last_due)  # no reordering
        d.last_due = due
        st.forwarded += 1
        return due

    def _forward(self, ns_fd: int, host_fd: int) -> None:
        sel = selectors.DefaultSelector()
        sel.register(ns_fd, selectors.EVENT_READ, (self.uplink, host_fd))
        sel.register(host_fd, selectors.EVENT_READ, (self.downlink, ns_fd))
        pending: list[tuple[float, int, int, bytes]] = []
        seq = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, _, out_fd, packet = heapq.heappop(pending)
                    with contextlib.suppress(OSError):
                        os.write(out_fd, packet)
                timeout = 0.05 if not pending else max(0.0, min(0.05, pending[0][0] - now))
                for key, _ in sel.select(timeout):
                    direction, out_fd = key.data
                    for _ in range(256):
                        try:
                            packet = os.read(key.fd, 65536)
                        except BlockingIOError:
                            break
                        except OSError:
                            return
                        with self._lock:
                            due = self._schedule(direction, len(packet), time.monotonic())
                        if due is not None:
                            seq += 1
                            heapq.heappush(pending, (due, seq, out_fd, packet))
        finally:
            sel.close()
