"""Pure analytics reducers: attendance, VAD smoothing, turns/exchanges, S-T analysis."""

from __future__ import annotations

import pytest

from syncclass.analytics import (
    AttendanceSession,
    AttendanceTracker,
    VadSmoother,
    find_exchanges,
    lesson_type,
    merge_turns,
    st_analysis,
    summarize,
    talk_ms,
)
from syncclass.analytics.attendance import union
from syncclass.analytics.st import code_samples, st_from_codes

T0 = 1_700_000_000_000  # a multiple of 1000 and of 2000


# -- attendance ---------------------------------------------------------------------------------
def test_union_merges_overlapping_and_touching() -> None:
    assert union([(5, 10), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]


def test_tracker_sessions_across_reconnects() -> None:
    tr = AttendanceTracker()
    tr.join("a", T0 + 1000)
    tr.join("a", T0 + 1500)  # duplicate join: the first stands
    tr.leave("a", T0 + 10_000, "disconnected")
    tr.leave("a", T0 + 11_000, "disconnected")  # leave without join: ignored
    tr.join("a", T0 + 12_000)
    tr.close(T0 + 60_000)
    s = tr.sessions["a"]
    assert s == [AttendanceSession(T0 + 1000, T0 + 10_000, "disconnected"),
                 AttendanceSession(T0 + 12_000, T0 + 60_000, "lesson_ended")]
    summary = summarize(s, T0, T0 + 60_000, expected_start_ms=None)
    assert summary.present_s == pytest.approx(57.0)
    assert summary.late_s == pytest.approx(1.0)
    assert summary.early_leave_s == 0
    assert summary.reconnects == 1
    assert summary.attendance_ratio == pytest.approx(57 / 60, abs=1e-4)
    assert summary.intervals == [(T0 + 1000, T0 + 10_000), (T0 + 12_000, T0 + 60_000)]


def test_late_against_timetable_and_early_leave() -> None:
    s = [AttendanceSession(T0 + 30_000, T0 + 100_000, "leave")]
    # The timetable said T0 - 60 s; the lesson started at T0: lateness counts from T0.
    sm = summarize(s, T0, T0 + 120_000, expected_start_ms=T0 - 60_000)
    assert sm.late_s == 30.0 and sm.early_leave_s == 20.0
    # The lesson started before the slot: lateness counts from the slot.
    sm = summarize(s, T0, T0 + 120_000, expected_start_ms=T0 + 20_000)
    assert sm.late_s == 10.0


def test_absent_classroom() -> None:
    sm = summarize([], T0, T0 + 60_000)
    assert sm.present_s == 0 and sm.attendance_ratio == 0 and sm.late_s == 60.0
    assert sm.first_join_ms is None


def test_bad_session_is_refused() -> None:
    with pytest.raises(ValueError, match="before it joins"):
        AttendanceSession(10, 5, "x")


# -- VAD smoothing ------------------------------------------------------------------------------
def feed(vad: VadSmoother, pattern: str, t0: int = T0) -> None:
    for i, ch in enumerate(pattern):
        vad.push(t0 + 20 * i, ch == "1")


def test_smoother_backdates_onset_and_bridges_short_pauses() -> None:
    vad = VadSmoother(20, onset_frames=3, onset_window=5, hangover_ms=300)
    # 10 silent, 50 voiced with a 200 ms pause inside, 30 silent.
    feed(vad, "0" * 10 + "1" * 20 + "0" * 10 + "1" * 20 + "0" * 30)
    assert vad.segments == [(T0 + 200, T0 + 1200)]
    assert talk_ms(vad.segments) == 1000


def test_smoother_reports_the_open_segments_times() -> None:
    """Directing reads when the speech began and its last voiced frame ended while the
    smoother still says "speaking" (within its hangover)."""
    vad = VadSmoother(20, onset_frames=3, onset_window=5, hangover_ms=300)
    assert vad.start_ms is None and vad.last_voiced_end_ms == 0
    feed(vad, "0" * 10 + "1" * 20 + "0" * 5)
    assert vad.speaking and vad.start_ms == T0 + 200
    assert vad.last_voiced_end_ms == T0 + 600
    feed(vad, "0" * 20, T0 + 700)
    assert not vad.speaking and vad.start_ms is None
    assert vad.last_voiced_end_ms == T0 + 600


def test_smoother_splits_on_long_pause_and_ignores_blips() -> None:
    vad = VadSmoother(20, onset_frames=3, onset_window=5, hangover_ms=300)
    feed(vad, "1" + "0" * 10 + "11" + "0" * 10 + "1" * 10 + "0" * 20 + "1" * 10)
    assert vad.segments == [(T0 + 20 * 23, T0 + 20 * 33)]
    assert vad.snapshot()[-1] == (T0 + 20 * 53, T0 + 20 * 63)
    assert vad.flush() == (T0 + 20 * 53, T0 + 20 * 63)
    assert not vad.speaking


def test_turns_and_exchanges() -> None:
    main = merge_turns([(0, 1000), (1500, 3000), (8000, 9000)], gap_ms=1000)
    assert main == [(0, 3000), (8000, 9000)]
    sites = {"a": [(3500, 4000), (9100, 9500)], "b": [(7000, 7500), (12_500, 13_000)]}
    ex = find_exchanges(main, sites, window_ms=3000)
    assert [(x.site, x.response_start_ms, x.response_latency_ms) for x in ex] == [
        ("a", 3500, 500), ("a", 9100, 100)]
    # b at 7000 is 4 s after main's first turn: too late; 12500 is 3.5 s after 9000.


# -- S-T ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rt", "ch", "kind"), [
    (0.2, 0.5, "练习型"), (0.3, 0.1, "练习型"), (0.7, 0.5, "讲授型"), (0.9, 0.0, "讲授型"),
    (0.5, 0.4, "对话型"), (0.5, 0.39, "混合型"),
])
def test_lesson_type_thresholds(rt: float, ch: float, kind: str) -> None:
    assert lesson_type(rt, ch) == kind


def test_st_from_codes() -> None:
    r = st_from_codes("TTTSSTTS", 30.0, T0)
    assert (r.n, r.nt, r.g) == (8, 5, 4)
    assert r.rt == pytest.approx(5 / 8) and r.ch == pytest.approx(3 / 8)
    assert r.curve[-1] == (5, 3) and len(r.curve) == 9
    assert r.lesson_type == "混合型"


def test_st_coding_windows_aligned_to_epoch() -> None:
    # Lesson from T0 + 500 to T0 + 10_500, 2 s windows: whole windows start at T0 + 2000.
    main = [(T0, T0 + 4000), (T0 + 8000, T0 + 8800)]
    rec = {"a": [(T0 + 4100, T0 + 8000)]}
    first, codes = code_samples(main, rec, T0 + 500, T0 + 10_500, 2000)
    assert first == T0 + 2000
    # [2,4) main → T; [4,6) a → S; [6,8) a → S; [8,10) main 0.8 s < half → S.
    assert codes == "TSSS"
    r = st_analysis(main, rec, T0 + 500, T0 + 10_500, 2.0)
    assert r.codes == "TSSS" and r.rt == 0.25 and r.g == 2


def test_st_main_must_beat_receiving() -> None:
    main = [(T0, T0 + 1200)]
    rec = {"a": [(T0, T0 + 1500)]}
    assert code_samples(main, rec, T0, T0 + 2000, 2000)[1] == "S"


def test_st_rejects_bad_codes() -> None:
    with pytest.raises(ValueError):
        st_from_codes("TXS", 1.0, 0)


def test_smoother_ends_segment_at_a_gap_in_the_input() -> None:
    vad = VadSmoother(20, onset_frames=3, onset_window=5, hangover_ms=300)
    feed(vad, "1" * 10)
    feed(vad, "1" * 10, t0=T0 + 2000)  # 1.8 s of audio missing
    vad.flush()
    assert vad.segments == [(T0, T0 + 200), (T0 + 2000, T0 + 2200)]
