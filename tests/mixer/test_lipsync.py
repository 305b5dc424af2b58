"""Lip sync: RTP timestamps on the sender's clock, and a classroom's audio FIFO delayed
or caught up to its picture's age without gaps or clicks."""

from __future__ import annotations

import numpy as np
import pytest

from mixer.media import AUDIO_FRAME, AUDIO_MAX_BUFFER, AUDIO_RATE, AudioInput
from syncclass.lipsync import NTP_EPOCH_OFFSET, LipSync, SenderClock, ntp_to_seconds, stretch


def test_ntp_to_unix_seconds() -> None:
    ntp = ((NTP_EPOCH_OFFSET + 1_700_000_000) << 32) | (1 << 31)  # .5 s
    assert ntp_to_seconds(ntp) == pytest.approx(1_700_000_000.5)


def test_sender_clock_maps_rtp_timestamps_across_the_wrap() -> None:
    clock = SenderClock(48000)
    assert clock.time_of(1234) is None  # no sender report yet
    clock.update(1000.0, 2**32 - 480)
    assert clock.time_of(480) == pytest.approx(1000.02)  # 960 samples later, wrapped
    assert clock.time_of(2**32 - 960) == pytest.approx(1000.0 - 0.01)
    clock.update(1001.0, 47520)  # a later report moves the mapping
    assert clock.time_of(48000) == pytest.approx(1001.01)
    assert clock.reports == 2


def test_stretch_keeps_the_waveform_continuous() -> None:
    t = np.arange(1008)
    block = (8000 * np.sin(2 * np.pi * 440 * t / AUDIO_RATE)).astype(np.int16)
    out = stretch(block, 960)
    assert len(out) == 960 and out.dtype == np.int16
    assert out[0] == block[0] and out[-1] == block[-1]
    # 5 % faster: the sine's slope grows by 5 % at most, no jump anywhere.
    max_step = 8000 * 2 * np.pi * 440 / AUDIO_RATE * 1.06
    assert np.abs(np.diff(out.astype(np.int32))).max() <= max_step
    same = block[:960]
    assert stretch(same, 960) is same  # the right length already: untouched


class Sender:
    """A classroom's microphone: a 1 kHz tone in 20 ms blocks, RTP timestamps in samples,
    captured on a sender clock ``skew`` seconds off the mixer's."""

    def __init__(self, skew: float = 3600.0) -> None:
        self.clock = SenderClock(AUDIO_RATE)
        self.clock.update(1000.0 + skew, 0)  # its sender report: RTP 0 at t=1000 (+skew)
        self.skew = skew
        self.n = 0

    def block(self) -> tuple[np.ndarray, int]:
        start = self.n * AUDIO_FRAME
        t = np.arange(start, start + AUDIO_FRAME)
        samples = (8000 * np.sin(2 * np.pi * 1000 * t / AUDIO_RATE)).astype(np.int16)
        self.n += 1
        return samples, start


def run(ain: AudioInput, sender: Sender, *, video_age: float, seconds: float,
        arrival_delay: float = 0.010, backlog_blocks: int = 1) -> np.ndarray:
    """One block arrives per 20 ms tick, the first ``arrival_delay`` after capture with
    ``backlog_blocks`` already queued; the mixer pulls one block per tick; the picture is
    ``video_age`` old."""
    out = []
    ticks = int(seconds * 50)
    pending = [sender.block() for _ in range(backlog_blocks)]
    for samples, rtp in pending:
        ain.push(samples, rtp)
    mix_t = 1000.0 + arrival_delay + backlog_blocks * AUDIO_FRAME / AUDIO_RATE
    for _ in range(ticks):
        samples, rtp = sender.block()  # one block arrives per 20 ms tick
        ain.push(samples, rtp)
        ain.sync.observe_video(video_age)
        block = ain.pull(AUDIO_FRAME, mix_t + sender.skew)
        assert block is not None
        out.append(block)
        mix_t += AUDIO_FRAME / AUDIO_RATE
    return np.concatenate(out)


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / AUDIO_RATE)[int(np.argmax(spectrum))])


def test_audio_ahead_of_its_picture_is_delayed_to_match() -> None:
    sender = Sender()
    ain = AudioInput("hetou-3", clock=sender.clock)
    out = run(ain, sender, video_age=0.090, seconds=4.0)
    sync = ain.sync
    assert sync.audio_age is not None and sync.error_s is not None
    assert abs(sync.error_s) <= 0.012, (sync.audio_age, sync.video_age)
    assert 0.050 <= ain.sync.samples_stretched / AUDIO_RATE <= 0.080
    # Delayed by stretching, not by dropping or inserting silence: the tone stays whole
    # (within 5 % while correcting, exact once settled) and never jumps.
    assert abs(_peak_hz(out[-AUDIO_RATE:]) - 1000) < 5
    max_step = 8000 * 2 * np.pi * 1000 / AUDIO_RATE * 1.06
    assert np.abs(np.diff(out.astype(np.int32))).max() <= max_step
    assert ain.dropped_samples == 0 and ain.underruns == 0


def test_audio_behind_its_picture_catches_up_to_the_fifo_minimum() -> None:
    sender = Sender(skew=-50.0)
    ain = AudioInput("main-3-1", clock=sender.clock)
    run(ain, sender, video_age=0.030, seconds=6.0, backlog_blocks=10)  # 200 ms backlog
    assert ain.sync.error_s is not None and abs(ain.sync.error_s) <= 0.012
    assert ain.sync.samples_stretched < -0.12 * AUDIO_RATE  # ~170 ms caught up
    assert ain.buffered < 4 * AUDIO_FRAME
    assert ain.underruns == 0


def test_audio_behind_at_the_fifo_floor_is_not_squeezed_into_underruns() -> None:
    """Packets in pairs every 40 ms (jitter) and audio 30 ms older than its picture, with
    nothing buffered to catch up from: blocks go out unstretched and never run dry."""
    sender = Sender(skew=-50.0)
    ain = AudioInput("shanping-3", clock=sender.clock)
    mix_t = 1000.0 + 0.040
    out = []
    for tick in range(250):  # 5 s
        if tick % 2 == 0:
            for _ in range(2):
                ain.push(*sender.block())
        ain.sync.observe_video(0.010)
        block = ain.pull(AUDIO_FRAME, mix_t + sender.skew)
        assert block is not None
        out.append(block)
        mix_t += AUDIO_FRAME / AUDIO_RATE
    assert ain.sync.error_s is not None and ain.sync.error_s < -0.012  # behind, and stays
    assert ain.underruns == 0
    assert abs(_peak_hz(np.concatenate(out[-100:])) - 1000) < 3  # pitch untouched


def test_in_sync_audio_is_left_alone_and_a_frozen_picture_stops_correction() -> None:
    sender = Sender()
    ain = AudioInput("shanping-3", clock=sender.clock)
    run(ain, sender, video_age=0.032, seconds=2.0)  # 30 ms of audio age: within deadband
    assert ain.sync.samples_stretched == 0
    ain.sync.observe_video(3.0)  # the camera froze three seconds ago
    assert ain.sync.error_s is None
    assert ain.sync.take(AUDIO_FRAME, ain.buffered) == AUDIO_FRAME


def test_delay_is_bounded_by_the_fifo() -> None:
    sender = Sender()
    ain = AudioInput("hetou-3", clock=sender.clock)
    run(ain, sender, video_age=0.45, seconds=12.0)  # a very slow picture
    assert ain.dropped_samples == 0  # stretching stopped before the FIFO overflowed
    assert ain.buffered <= AUDIO_MAX_BUFFER
    assert ain.sync.samples_stretched / AUDIO_RATE >= 0.2


def test_no_sender_report_means_no_correction() -> None:
    ain = AudioInput("hetou-3")
    sync = LipSync()
    ain.sync = sync
    for k in range(5):
        ain.push(np.zeros(AUDIO_FRAME, np.int16), k * AUDIO_FRAME)
    sync.observe_video(0.2)
    assert ain.pull(AUDIO_FRAME, 1000.0) is not None
    assert sync.audio_age is None and sync.samples_stretched == 0
