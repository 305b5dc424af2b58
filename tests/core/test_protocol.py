"""Signaling message validation and round trips."""

from __future__ import annotations

import json

import pytest

from syncclass.errors import ProtocolError
from syncclass.protocol import (
    Answer,
    Error,
    Hello,
    LessonInfo,
    LessonState,
    Offer,
    Stats,
    encode,
    parse_client_message,
    parse_server_message,
)


def test_client_round_trip() -> None:
    for msg in (
        Hello(classroom_id="hetou-3", token="x" * 20),
        Offer(sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"),
        Stats(frames_received=10, fps=15.0, latency_ms={"main-3-1": 80.5}),
    ):
        assert parse_client_message(encode(msg)) == msg


def test_server_round_trip() -> None:
    info = LessonInfo(
        lesson_id="l1",
        state="live",
        pairing_id="p",
        main="m",
        receiving=["r"],
        subject="数学",
        grade="三年级",
        teacher="王老师",
        started_ms=1,
    )
    for msg in (
        LessonState(lesson=info),
        Answer(sdp="v=0"),
        Error(code="bad_json", message="x", ref=None),
    ):
        assert parse_server_message(encode(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no": "type"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "hello", "classroom_id": "a"}', "bad_message"),
        ('{"type": "hello", "classroom_id": "a", "token": "t", "extra": 1}', "bad_message"),
        ('{"type": "offer", "sdp": 42}', "bad_message"),
        ('{"type": "stats", "frames_received": -1, "fps": 1}', "bad_message"),
    ],
)
def test_malformed_messages(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    assert info.value.code == code
    assert info.value.message


def test_oversized_refused_before_parsing() -> None:
    raw = json.dumps({"type": "offer", "sdp": "v" * 5000})
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, max_bytes=1024)
    assert info.value.code == "too_large"


def test_sdp_size_capped() -> None:
    with pytest.raises(ProtocolError, match="sdp"):
        parse_client_message(json.dumps({"type": "offer", "sdp": "v" * 40000}), 10**6)
