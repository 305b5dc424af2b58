"""Property-based fuzzing of what arrives from outside: signaling messages and configs.

Whatever a classroom sends, parsing either yields a valid message or raises
ProtocolError (never another exception); whatever a config file holds, loading either
yields a config or raises ConfigError naming the problem.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncclass.config import parse_config
from syncclass.errors import ConfigError, ProtocolError
from syncclass.protocol import CLIENT_TYPES, parse_client_message

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "county.yaml"
BASE = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000) | st.text(max_size=2000))
def test_any_bytes_parse_or_protocol_error(raw: bytes | str) -> None:
    try:
        parse_client_message(raw)
    except ProtocolError as exc:
        assert exc.code and exc.message


@FUZZ
@given(st.sampled_from(sorted(CLIENT_TYPES)),
       st.dictionaries(st.sampled_from(["classroom_id", "token", "sdp", "fps", "id",
                                        "frames_received", "latency_ms", "timetable_id",
                                        "client", "protocol", "extra"]),
                       json_values, max_size=6))
def test_typed_messages_with_random_fields(kind: str, fields: dict[str, Any]) -> None:
    raw = json.dumps({"type": kind, **fields})
    try:
        msg = parse_client_message(raw)
    except ProtocolError as exc:
        assert exc.code in ("bad_message", "too_large"), exc.code
    else:
        assert msg.type == kind


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = [p for p in _paths(BASE) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=4))
def test_mutated_configs_load_or_config_error(mutations: list[tuple[tuple[Any, ...], Any]]
                                              ) -> None:
    data = copy.deepcopy(BASE)
    for path, value in mutations:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        parse_config(data, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
