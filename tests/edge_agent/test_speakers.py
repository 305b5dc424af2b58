"""Speakers: the steady output buffer, and real playback through PortAudio on a JACK
dummy device (real-time paced, no sound card), including a speaker → microphone loopback
that the echo canceller must clean."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import yaml

from edge_agent.agent import Agent, SourceAudioTrack
from edge_agent.audio_processing import AudioProcessor, AudioProcessorOptions
from edge_agent.devices import MicrophoneAudioSource
from edge_agent.speakers import PlayoutBuffer, SpeakerAudioSink
from syncclass.audio import spectrum_peaks
from syncclass.config import load_config
from syncclass.errors import DeviceError
from tests.aec_room import FAR_TEXT, energy_db, fit, speech, to_i16
from tests.jack_support import jack_server

RATE = 48000
ROOT = Path(__file__).resolve().parents[2]


# -- PlayoutBuffer (pure) -------------------------------------------------------------------


def test_buffer_primes_to_target_then_plays_in_order() -> None:
    buf = PlayoutBuffer(target_ms=40, max_ms=100)
    buf.write(np.arange(960, dtype=np.int16))  # 20 ms < 40 ms target
    assert not buf.read(480).any()
    assert buf.underrun_samples == 480
    buf.write(np.arange(960, 1920, dtype=np.int16))
    out = np.concatenate([buf.read(480) for _ in range(4)])
    assert np.array_equal(out, np.arange(1920, dtype=np.int16))
    assert buf.played_samples == 1920 and buf.fill_ms == 0


def test_buffer_underrun_plays_silence_and_reprimes() -> None:
    buf = PlayoutBuffer(target_ms=20, max_ms=100)
    buf.write(np.full(960, 7, np.int16))
    out = buf.read(1440)
    assert (out[:960] == 7).all() and not out[960:].any()
    assert buf.underruns == 1 and buf.underrun_samples == 480
    buf.write(np.full(480, 9, np.int16))  # below target again: still silent
    assert not buf.read(480).any()


def test_buffer_overflow_drops_oldest_and_wraps() -> None:
    buf = PlayoutBuffer(target_ms=10, max_ms=20)  # 960 samples capacity
    for k in range(5):
        buf.write(np.arange(k * 300, (k + 1) * 300, dtype=np.int16))
    assert buf.dropped_samples == 1500 - 960
    assert buf.fill_ms == 20.0
    out = buf.read(960)
    assert np.array_equal(out, np.arange(540, 1500, dtype=np.int16))
    buf.write(np.arange(5000, dtype=np.int16))  # one write larger than the capacity
    assert np.array_equal(buf.read(960), np.arange(5000 - 960, 5000, dtype=np.int16))


def test_buffer_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="target_ms"):
        PlayoutBuffer(target_ms=300, max_ms=200)


# -- real playback on a JACK dummy device ---------------------------------------------------


@pytest.fixture(scope="module")
def jack() -> Iterator[str]:
    """A private jackd (dummy backend); PortAudio in this process is re-initialised to see
    it, and again afterwards."""
    import sounddevice as sd

    with jack_server() as name:
        old = os.environ.get("JACK_DEFAULT_SERVER")
        os.environ["JACK_DEFAULT_SERVER"] = name
        sd._terminate()
        sd._initialize()
        try:
            yield name
        finally:
            sd._terminate()
            if old is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = old
            sd._initialize()


def _frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = pts
    return frame


async def test_speakers_play_at_device_pace(jack: str) -> None:
    sink = SpeakerAudioSink("system", target_ms=60)
    played: list[np.ndarray] = []
    sink.add_played_listener(played.append)
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(RATE * 2) / RATE)).astype(np.int16)
    for i in range(0, len(tone), 960):  # network-like: bursts of 5 frames every 100 ms
        sink.write(_frame(tone[i : i + 960], i))
        if i // 960 % 5 == 4:
            await asyncio.sleep(0.1)
    for _ in range(200):  # until everything written has been played (10 s at most)
        if sink.buffer.fill_ms == 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    stats = sink.stats()
    sink.close()
    assert stats["playing"] and stats["callbacks"] > 0
    # Every written sample was played or (counted) dropped; nothing is lost silently.
    buf = sink.buffer
    assert buf.played_samples + buf.dropped_samples == buf.written_samples == len(tone)
    audio = np.concatenate(played)
    heard = audio[audio != 0]
    freq = spectrum_peaks(heard, RATE, count=1)[0][0]
    assert abs(freq - 440) < 5
    if not buf.dropped_samples:  # the device kept up: the tone came out sample-exact
        assert np.array_equal(heard, tone[tone != 0])


def test_missing_speakers_raise_a_clear_error(jack: str) -> None:
    with pytest.raises(DeviceError, match="not found; available"):
        SpeakerAudioSink("syncclass-no-such-speaker")


async def test_loopback_echo_is_cancelled_in_real_time(jack: str) -> None:
    """Speakers play teacher speech; the JACK graph routes it back into the microphone (a
    direct acoustic path). The mic path, cleaned with the played samples as reference
    (threads and buffers as in the agent), keeps at least 20 dB less of it."""
    sink = SpeakerAudioSink("system", target_ms=60)
    processor = AudioProcessor(AudioProcessorOptions(agc=False))
    sink.add_played_listener(processor.feed_reference)
    mic = MicrophoneAudioSource("system")
    far = to_i16(fit(speech(FAR_TEXT, "en-us"), 9.0) * 0.4)
    raw: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    try:
        first = await mic.read()  # starts the input stream
        lsp = await asyncio.create_subprocess_exec("jack_lsp", stdout=asyncio.subprocess.PIPE)
        ports = (await lsp.communicate())[0].decode().split("\n")
        # PortAudio's own ports (numbered on from earlier streams of this process).
        out_port = [p for p in ports if ":out_" in p and not p.startswith("system")][-1]
        in_port = [p for p in ports if ":in_" in p and not p.startswith("system")][-1]
        connect = await asyncio.create_subprocess_exec("jack_connect", out_port, in_port)
        assert await connect.wait() == 0
        pts = 0
        sink.write(_frame(far[:960], 0))
        for i in range(960, len(far), 960):
            sink.write(_frame(far[i : i + 960], i))  # paced by the mic's blocks
            frame = await mic.read()
            samples: Any = frame.to_ndarray().reshape(-1)
            raw.append(samples)
            clean.append(processor.process(samples, frame.pts))
            pts = frame.pts
        assert first.pts is not None and pts > 0
    finally:
        mic.close()
        sink.close()
        processor.close()
    mic_in = np.concatenate(raw).astype(np.float64) / 32768
    out = np.concatenate(clean).astype(np.float64) / 32768
    tail = slice(4 * RATE, None)  # after convergence
    assert energy_db(mic_in[tail]) > -40, "the loopback did not carry the speakers' sound"
    erle = energy_db(mic_in[tail]) - energy_db(out[tail])
    assert erle >= 20.0, f"ERLE {erle:.1f} dB, {processor.stats()}"


async def test_agent_feeds_what_its_speakers_play_to_its_echo_canceller(
    jack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent as configured on a classroom PC (microphone + speakers = the JACK device):
    the speaker sink's played blocks are the canceller's reference, and the microphone
    track sends the cleaned signal. The loopback carries the speakers into the mic."""
    monkeypatch.setenv("SYNCCLASS_STATE_DIR", str(tmp_path / "state"))
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["classrooms"][0]["devices"] = {
        "microphone": {"kind": "microphone", "name": "system"},
        "speakers": {"kind": "device", "name": "system"},
        "camera": {"kind": "synthetic", "width": 320, "height": 180},
    }
    path = tmp_path / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = load_config(path)
    agent = Agent(config, data["classrooms"][0]["id"])
    try:
        assert isinstance(agent.audio_sink, SpeakerAudioSink)
        processor = agent.local.processor
        assert processor is not None and processor.options.aec
        track = SourceAudioTrack(agent.audio_source, agent.local.process_mic)
        await track.recv()  # starts the microphone
        lsp = await asyncio.create_subprocess_exec("jack_lsp", stdout=asyncio.subprocess.PIPE)
        ports = (await lsp.communicate())[0].decode().split("\n")
        out_port = [p for p in ports if ":out_" in p and not p.startswith("system")][-1]
        in_port = [p for p in ports if ":in_" in p and not p.startswith("system")][-1]
        connect = await asyncio.create_subprocess_exec("jack_connect", out_port, in_port)
        assert await connect.wait() == 0
        far = to_i16(fit(speech(FAR_TEXT, "en-us"), 7.0) * 0.4)
        levels = []
        for i in range(0, len(far), 960):
            agent.audio_sink.write(_frame(far[i : i + 960], i))  # as _read_audio does
            sent = await track.recv()
            levels.append(agent.local.mic_level_dbov)
            assert sent.samples == 960
        track.stop()
        stats = processor.stats()
        assert stats["frames"] >= len(levels)
        assert stats["reference_underruns"] < stats["frames"] // 4, stats
        played = agent.audio_sink.buffer.played_samples
        assert played > 4 * RATE
        # The far end's speech reached the mic at about -10 dBFS; what the agent sends
        # after convergence is at least 20 dB quieter.
        tail = np.array(levels[len(levels) * 3 // 5 :])
        assert np.percentile(tail, 90) < -35, np.percentile(tail, 90)
    finally:
        agent.local.close()
        agent.audio_source.close()
        agent.audio_sink.close()
        agent.video_source.close()
        agent.video_sink.close()
