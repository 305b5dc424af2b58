"""The analytics checkpoint a node writes to Redis for fail-over: round trip, bound,
and bad documents refused in words."""

from __future__ import annotations

import itertools
import json

import pytest

from syncclass.analytics.checkpoint import (
    NETWORK_FIELDS,
    AnalyticsCheckpoint,
    Gap,
)


def _sample(ts: int) -> dict[str, object]:
    return {"ts_ms": ts, "rtt_ms": 12.5, "jitter_ms": 3.0, "loss_percent": 0.0,
            "bitrate_kbps": 812.0, "fps": 15.0, "freezes": 0, "latency_ms": None}


def _checkpoint(samples: int = 3) -> AnalyticsCheckpoint:
    return AnalyticsCheckpoint(
        lesson_id="shiyan-rural-math-20261205-1", ts_ms=10_000, node_id="n1",
        sessions={"hetou-3": [(1_000, 4_000, "disconnected")]},
        open={"hetou-3": 5_000, "main-3-1": 900},
        speech={"main-3-1": [(1_200, 3_000), (4_000, 9_000)]},
        hands={"hetou-3": [2_000, 7_000]}, heads={"hetou-3": [(3_000, 12)]},
        network={"hetou-3": [_sample(1_000 + 2_000 * i) for i in range(samples)]},
        contacts={"hetou-3": 800}, gaps=[Gap(100, 600)],
        directing=[{"t_s": 0.0, "active": "main-3-1", "courseware": False, "large": None,
                    "reason": "start", "source": None, "ts_ms": 1_000}])


def test_round_trip_and_lost_sessions() -> None:
    cp = _checkpoint()
    back = AnalyticsCheckpoint.parse(cp.to_json())
    assert back == cp
    # Sessions still open at the checkpoint end there: the rest is the fail-over's gap.
    assert back.closed_sessions()["hetou-3"] == [(1_000, 4_000, "disconnected"),
                                                 (5_000, 10_000, "node_lost")]
    row = json.loads(cp.to_json())["network"]["hetou-3"][0]  # values only, no field names
    assert row == [_sample(1_000)[k] for k in NETWORK_FIELDS]


def test_bounded_by_thinning_network_samples() -> None:
    cp = _checkpoint(samples=2000)
    full = len(cp.to_json(max_bytes=10 << 20))
    text = cp.to_json(max_bytes=full // 4)
    assert len(text.encode()) <= full // 4
    back = AnalyticsCheckpoint.parse(text)
    kept = back.network["hetou-3"]
    assert 0 < len(kept) < 2000 and back.thinned == 2000 - len(kept)
    assert kept[-1] == _sample(1_000 + 2_000 * 1999)  # the latest sample stays
    assert back.speech == cp.speech and back.hands == cp.hands  # the rest is whole
    with pytest.raises(ValueError, match="exceeds 200 bytes without network samples"):
        cp.to_json(max_bytes=200)


@pytest.mark.parametrize(("doc", "words"), [
    ("not json", "document: Invalid JSON"),
    ('{"schema": "other"}', "schema"),
    (lambda d: {**d, "version": 2}, "version"),
    (lambda d: {**d, "ts_ms": "soon"}, "ts_ms"),
    (lambda d: {**d, "speech": {"x": [[1]]}}, "speech.x.0"),
    (lambda d: {**d, "sessions": {"x": [[5, 1, "left"]]}}, "leaves .1. before it joins"),
    (lambda d: {**d, "network": {"x": [[1, 2]]}}, "network.x.0"),
])
def test_bad_documents_refused_in_words(doc: object, words: str) -> None:
    good = json.loads(_checkpoint().to_json())
    text = doc if isinstance(doc, str) else json.dumps(doc(good))  # type: ignore[operator]
    with pytest.raises(ValueError, match=words):
        AnalyticsCheckpoint.parse(text)


def test_oversized_document_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="of 2000 bytes exceeds 1000"):
        AnalyticsCheckpoint.parse("x" * 2000, max_bytes=1000)


def test_network_rows_per_classroom_bounded_evenly() -> None:
    cp = _checkpoint(samples=1350)  # 45 minutes at one sample per 2 s
    back = AnalyticsCheckpoint.parse(cp.to_json(max_network_rows=300))
    kept = back.network["hetou-3"]
    assert len(kept) == 270 and back.thinned == 1350 - 270  # every 5th sample
    assert kept[-1] == _sample(1_000 + 2_000 * 1349)
    assert {b["ts_ms"] - a["ts_ms"] for a, b in itertools.pairwise(kept)} == {10_000}
