"""Property-based fuzzing of the ZeroMQ messages the recorder accepts (recorder/wire.py):
whatever arrives, parsing yields a valid message or raises ValueError, never another
exception; valid headers round-trip."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.wire import Header, LessonMeta, Report

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)


@FUZZ
@given(st.binary(max_size=500))
def test_header_bytes(raw: bytes) -> None:
    try:
        Header.parse(raw)
    except ValueError as exc:
        assert str(exc)


@FUZZ
@given(st.fixed_dictionaries({}, optional={
    "v": st.sampled_from([1, 2, "1", None]) | json_values,
    "kind": st.sampled_from(["meta", "video", "audio", "end", "x"]) | json_values,
    "lesson": st.sampled_from(["l-1", "", "../x", ".x", "a/b"]) | json_values,
    "seq": st.integers(-5, 2**70) | json_values,
    "pts": st.integers(-2**70, 2**70) | json_values,
    "key": json_values,
}))
def test_header_fields(obj: dict[str, Any]) -> None:
    try:
        header = Header.parse(json.dumps(obj).encode())
    except ValueError:
        return
    assert "/" not in header.lesson and not header.lesson.startswith(".")
    assert header.seq >= 0
    assert Header.parse(header.to_bytes()) == header


@FUZZ
@given(st.binary(max_size=800) | json_values.map(lambda v: json.dumps(v).encode()))
def test_meta_and_report_payloads(raw: bytes) -> None:
    for parse in (LessonMeta.parse, Report.parse):
        try:
            parse(raw)
        except ValueError as exc:
            assert str(exc)
