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
from typing import Literal, Protocol, TypeVar

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


def call_in_netns(netns: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run ``fn`` on a thread that entered network namespace ``netns`` (its sockets live
    there)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}", "rb") as fh:
                if libc.setns(fh.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if error:
        raise error[0]
    if not result:
        raise TimeoutError(f"call in namespace {netns} timed out")
    return result[0]


class NamespaceLink(Protocol):
    """What a deployment needs of a namespace it starts a classroom in."""

    netns: str
    host_addr: str
    """This (root) namespace's address as the classroom reaches it."""
    ns_addr: str
    """The classroom's own address inside its namespace."""

    def ns_command(self, argv: list[str]) -> list[str]: ...

    def call_in_ns(self, fn: Callable[[], T], timeout: float = 30.0) -> T: ...


def _free_subnet(prefix: str = "10.99") -> int:
    """A free X of ``<prefix>.X.0/24`` (no address of this namespace in it)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    candidates = [x for x in range(1, 255) if f" {prefix}.{x}." not in used]
    if not candidates:
        raise RuntimeError(f"no free {prefix}.X.0 test subnet")
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
        return call_in_netns(self.netns, fn, timeout)

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


FirewallPolicy = Literal["open", "udp_blocked", "tcp_only_ports"]


class NattedSchool:
    """A school LAN behind a NAT router, each in its own network namespace, over veth::

        namespace <tag>s            namespace <tag>r                  this (root) namespace
        classroom 192.168.X.2 ─veth─ 192.168.X.1  NAT  10.98.X.2 ─veth─ 10.98.X.1  mixer, TURN
                                     (nftables masquerade + a forward filter)

    The router masquerades everything the school sends out (as a school's ADSL router
    does) and filters it by :meth:`set_firewall`: ``open``; ``udp_blocked`` (no UDP leaves
    the school: host and server-reflexive ICE candidates are useless, TURN over TCP/TLS is
    the way); ``tcp_only_ports`` (only TCP to the given ports leaves, like a firewall that
    allows only HTTPS on 443). Replies to allowed connections come back (conntrack).
    Needs root and nftables. :meth:`close` (or the context manager) removes everything.
    """

    def __init__(self, name: str = "nat") -> None:
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True,
                              text=True).stdout
        free = [x for x in range(1, 255) if f" 10.98.{x}." not in used
                and f" 192.168.{x}." not in used]
        if not free:
            raise RuntimeError("no free 10.98.X.0 / 192.168.X.0 test subnet")
        self.subnet = random.choice(free)
        tag = f"{name[:3]}{os.getpid() % 100000}{self.subnet}"[:11]
        self.netns, self.router_ns = f"{tag}s", f"{tag}r"
        self.wan_host, self.wan_router = f"{tag}w0", f"{tag}w1"
        self.lan_router, self.lan_school = f"{tag}l0", f"{tag}l1"
        self.host_addr = f"10.98.{self.subnet}.1"
        self.router_addr = f"10.98.{self.subnet}.2"
        """The school's public address: everything it sends arrives from here."""
        self.ns_addr = f"192.168.{self.subnet}.2"
        self.lan = f"192.168.{self.subnet}.0/24"
        self._made: list[str] = []

    def start(self) -> NattedSchool:
        try:
            for ns in (self.router_ns, self.netns):
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
            _run("ip", "link", "add", self.wan_host, "type", "veth", "peer", "name",
                 self.wan_router, "netns", self.router_ns)
            self._made.append("wan")
            _run("ip", "-n", self.router_ns, "link", "add", self.lan_router, "type", "veth",
                 "peer", "name", self.lan_school, "netns", self.netns)
            _run("ip", "addr", "add", f"{self.host_addr}/24", "dev", self.wan_host)
            _run("ip", "link", "set", self.wan_host, "up")
            r, s = ("ip", "-n", self.router_ns), ("ip", "-n", self.netns)
            _run(*r, "addr", "add", f"{self.router_addr}/24", "dev", self.wan_router)
            _run(*r, "addr", "add", f"192.168.{self.subnet}.1/24", "dev", self.lan_router)
            for dev in (self.wan_router, self.lan_router, "lo"):
                _run(*r, "link", "set", dev, "up")
            _run(*s, "addr", "add", f"{self.ns_addr}/24", "dev", self.lan_school)
            _run(*s, "link", "set", self.lan_school, "up")
            _run(*s, "link", "set", "lo", "up")
            _run(*s, "route", "add", "default", "via", f"192.168.{self.subnet}.1")
            _run("ip", "netns", "exec", self.router_ns, "sysctl", "-q", "-w",
                 "net.ipv4.ip_forward=1")
            # The mixer's ICE checks to the school's private host candidate must die here,
            # not leave through this machine's default route.
            _run("ip", "route", "add", "unreachable", self.lan)
            self._made.append("route")
            self.set_firewall("open")
        except BaseException:
            self.close()
            raise
        logger.info("school %s behind NAT %s (%s) <-> %s up", self.ns_addr, self.router_addr,
                    self.router_ns, self.host_addr)
        return self

    def set_firewall(self, policy: FirewallPolicy, tcp_ports: tuple[int, ...] = ()) -> None:
        """Replace the router's rules: masquerade, plus what may leave the school."""
        if policy == "open":
            filt = ""
        elif policy == "udp_blocked":
            filt = f'iifname "{self.lan_router}" meta l4proto udp drop'
        else:
            if not tcp_ports:
                raise ValueError("tcp_only_ports needs tcp_ports")
            ports = ", ".join(str(p) for p in tcp_ports)
            filt = (f'iifname "{self.lan_router}" tcp dport {{ {ports} }} accept\n'
                    f'    iifname "{self.lan_router}" drop')
        ruleset = f"""flush ruleset
table ip school {{
  chain nat_out {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{self.wan_router}" masquerade
  }}
  chain leaving {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    {filt}
  }}
}}
"""
        proc = subprocess.run(["ip", "netns", "exec", self.router_ns, "nft", "-f", "-"],
                              input=ruleset, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            raise RuntimeError(f"nft failed: {proc.stderr.strip()}\n{ruleset}")
        logger.info("school %s: firewall %s %s", self.netns, policy, tcp_ports or "")

    def ns_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the school's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def call_in_ns(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on a thread inside the school's namespace."""
        return call_in_netns(self.netns, fn, timeout)

    def close(self) -> None:
        if "route" in self._made:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "route", "del", "unreachable", self.lan)
        if "wan" in self._made:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "link", "del", self.wan_host)  # its peer goes with it
        for ns in (self.netns, self.router_ns):
            if ns in self._made:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    _run("ip", "netns", "del", ns)  # the LAN veth pair goes with them
        self._made.clear()

    def __enter__(self) -> NattedSchool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LanHost:
    """One host of a :class:`BridgedLan`: its own network namespace, one address."""

    netns: str
    ns_addr: str
    """The host's address on the LAN."""
    host_addr: str
    """This (root) namespace's address on the LAN (the bridge's)."""

    def ns_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def call_in_ns(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on a thread inside the host's namespace (e.g. to reach its loopback)."""
        return call_in_netns(self.netns, fn, timeout)


class BridgedLan:
    """Hosts on one switched /24, each in its own network namespace (a server room)::

        namespace <tag>-<name>  10.20.X.2 ─veth─┐
        namespace <tag>-<name>  10.20.X.3 ─veth─┼─ bridge <tag>br 10.20.X.1 (this namespace)
        ...                                     ┘

    Packets between hosts cross two veth pairs and the bridge, unimpaired (this kernel has
    no ``netem``); this namespace reaches every host at its address, for a test to watch.
    Each host has its loopback up. Needs root. :meth:`close` (or the context manager)
    removes the namespaces, veth pairs and the bridge; stop the processes in them first.
    """

    def __init__(self, name: str = "lan", prefix: str = "10.20") -> None:
        self.subnet = _free_subnet(prefix)
        self.tag = f"{name[:3]}{os.getpid() % 100000}{self.subnet}"[:10]
        self.prefix = f"{prefix}.{self.subnet}"
        self.bridge = f"{self.tag}br"
        self.bridge_addr = f"{self.prefix}.1"
        self.hosts: dict[str, LanHost] = {}
        self._devs: list[str] = []
        self._namespaces: list[str] = []
        self._bridge_made = False

    def start(self) -> BridgedLan:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            _run("ip", "addr", "add", f"{self.bridge_addr}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        logger.info("LAN %s.0/24 on bridge %s up", self.prefix, self.bridge)
        return self

    def add_host(self, name: str) -> LanHost:
        """A new namespace ``<tag>-<name>`` on the LAN at the next free address."""
        if name in self.hosts:
            raise ValueError(f"LAN host {name!r} exists")
        index = len(self.hosts) + 2
        if index > 254:
            raise ValueError("a /24 LAN holds at most 253 hosts")
        host = LanHost(f"{self.tag}-{name}", f"{self.prefix}.{index}", self.bridge_addr)
        dev, peer = f"{self.tag}h{index}", f"{self.tag}p{index}"
        try:
            _run("ip", "netns", "add", host.netns)
            self._namespaces.append(host.netns)
            _run("ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns",
                 host.netns)
            self._devs.append(dev)
            _run("ip", "link", "set", dev, "master", self.bridge)
            _run("ip", "link", "set", dev, "up")
            n = ("ip", "-n", host.netns)
            _run(*n, "addr", "add", f"{host.ns_addr}/24", "dev", peer)
            _run(*n, "link", "set", peer, "up")
            _run(*n, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        self.hosts[name] = host
        logger.info("LAN host %s: %s in namespace %s", name, host.ns_addr, host.netns)
        return host

    def close(self) -> None:
        for dev in self._devs:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "link", "del", dev)  # its peer in the namespace goes with it
        self._devs.clear()
        for ns in self._namespaces:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "netns", "del", ns)
        self._namespaces.clear()
        self.hosts.clear()
        if self._bridge_made:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "link", "del", self.bridge)
            self._bridge_made = False

    def __enter__(self) -> BridgedLan:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
