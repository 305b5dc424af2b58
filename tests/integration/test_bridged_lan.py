"""The fail-over benchmark's LAN (``benchmarks/failover.py --netns``): hosts in their own
network namespaces on one bridge reach each other and are reached from here at their
addresses; PostgreSQL from ``scripts/pgserver.sh`` listens on a host's LAN address and
accepts the other hosts; closing removes every namespace and device.

Needs root (network namespaces): CI runs as root."""

from __future__ import annotations

import socket
import subprocess
import threading

import psycopg
import pytest

from syncclass.demo import free_port
from syncclass.netem import BridgedLan
from syncclass.testing.pg_support import PostgresServer

pytestmark = pytest.mark.integration


def _namespaces_and_links() -> str:
    return (subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            + subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout)


@pytest.mark.timeout(120)
def test_hosts_reach_each_other_and_postgresql_on_the_lan() -> None:
    lan = BridgedLan("tlan")
    try:
        lan.start()
        a, b, db = lan.add_host("a"), lan.add_host("b"), lan.add_host("db")
        assert len({a.ns_addr, b.ns_addr, db.ns_addr, lan.bridge_addr}) == 4
        port = free_port()

        def serve() -> tuple[str, int]:
            with socket.create_server((b.ns_addr, port)) as srv:
                srv.settimeout(10)
                conn, peer = srv.accept()
                conn.close()
                return peer

        peers: list[tuple[str, int]] = []
        for client in (a.call_in_ns, lambda fn: fn()):  # host a, then this namespace
            t = threading.Thread(target=lambda: peers.append(b.call_in_ns(serve)))
            t.start()
            for _ in range(50):
                try:
                    client(lambda: socket.create_connection((b.ns_addr, port), 2).close())
                    break
                except ConnectionRefusedError:
                    threading.Event().wait(0.05)
            t.join(15)
        assert [p[0] for p in peers] == [a.ns_addr, lan.bridge_addr]

        with PostgresServer(free_port(), db.ns_addr, db.ns_command([])) as pg:
            def client_addr() -> str:
                with psycopg.connect(pg.url, connect_timeout=5) as conn:
                    row = conn.execute("SELECT inet_client_addr()").fetchone()
                    assert row is not None
                    return str(row[0])

            assert a.call_in_ns(client_addr) == a.ns_addr
        made = [lan.bridge, a.netns, b.netns, db.netns]
        assert all(x in _namespaces_and_links() for x in made)
    finally:
        lan.close()
    left = _namespaces_and_links()
    assert not [x for x in made if x in left], left
