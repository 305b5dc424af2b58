"""Media workers, the pure part (syncclass.workers): counts, endpoints, placement."""

from __future__ import annotations

import re

import pytest

from syncclass.config import PairingConfig
from syncclass.errors import ConfigError
from syncclass.workers import (
    Placement,
    pairing_groups,
    recorder_endpoints,
    resolve_workers,
    worker_endpoint,
)
from tests.county import County


def test_resolve_workers() -> None:
    assert resolve_workers(0) == 0
    assert resolve_workers(3) == 3
    assert resolve_workers("auto", cpu_count=16) == 16
    assert resolve_workers("auto", cpu_count=200) == 64


def test_worker_endpoints() -> None:
    assert worker_endpoint("tcp://127.0.0.1:8710", 0) == "tcp://127.0.0.1:8710"
    assert recorder_endpoints("tcp://127.0.0.1:8710", 3) == [
        "tcp://127.0.0.1:8710", "tcp://127.0.0.1:8711", "tcp://127.0.0.1:8712"]
    assert recorder_endpoints("tcp://127.0.0.1:8710", 0) == ["tcp://127.0.0.1:8710"]
    assert worker_endpoint("ipc:///run/sc/rec", 2) == "ipc:///run/sc/rec-2"
    with pytest.raises(ValueError, match="beyond 65535"):
        worker_endpoint("tcp://127.0.0.1:65535", 1)
    with pytest.raises(ValueError, match="fixed port"):
        worker_endpoint("tcp://127.0.0.1:0", 1)
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        worker_endpoint("inproc://x", 1)


def test_pairings_sharing_a_classroom_are_one_group() -> None:
    pairings = [PairingConfig(id="a", main="m1", receiving=["r1"]),
                PairingConfig(id="b", main="m2", receiving=["r2"]),
                PairingConfig(id="c", main="m3", receiving=["r2", "r3"]),
                PairingConfig(id="d", main="m4", receiving=["r3"])]
    assert pairing_groups(pairings) == {"a": "a", "b": "b", "c": "b", "d": "b"}


def test_placement_sticky_and_least_loaded() -> None:
    p = Placement(2)
    both = {0: True, 1: True}
    assert p.worker_for("a", both) == 0
    assert p.worker_for("b", both) == 1
    assert p.worker_for("c", both) == 0
    assert p.worker_for("a", {0: False, 1: True}) == 0  # its lesson resumes on worker 0
    assert p.worker_for("d", {0: False, 1: True}) == 1  # new groups only on live workers
    assert p.worker_for("e", {0: False, 1: False}) is None
    p.pin("e", 1)
    assert p.groups_of(1) == ["b", "d", "e"]


def test_config_workers_in_words(county: County) -> None:
    county.mixer["workers"] = "many"
    with pytest.raises(ConfigError, match=re.escape(
            "mixer.workers: 'many' is not a number of worker processes: use 0")):
        county.config()
    county.mixer["workers"] = "auto"
    assert county.config().mixer.workers == "auto"
