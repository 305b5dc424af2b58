"""Speech clips for ground-truth lessons: espeak-ng speech cut to exact durations."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.scripted import decode_clip

TEACHER_TEXT = ("同学们好，今天我们学习分数的加法。请大家看黑板上的第一道例题，"
                "二分之一加四分之一等于多少？我们先把分母变得一样。")
PUPIL_TEXT = "老师，我觉得答案是四分之三，因为二分之一等于四分之二，再加上四分之一。"


def espeak(text: str, out: Path, pitch: int, voice: str = "cmn") -> npt.NDArray[np.int16]:
    """``text`` spoken by espeak-ng, 48 kHz mono int16, leading/trailing silence cut."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is missing: run scripts/bootstrap.sh (apt espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", "175", "-p", str(pitch), "-w", str(out), text],
                   check=True, capture_output=True, timeout=60)
    samples = decode_clip(out)
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > 300)[0]
    return samples[loud[0] : loud[-1] + 1]


def write_wav(path: Path, samples: npt.NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(samples.astype("<i2").tobytes())


def make_clips(folder: Path, durations_s: dict[str, float]) -> dict[str, Path]:
    """Clips named ``teacher_<d>`` / ``pupil_<d>``: the first ``d`` s of continuous speech."""
    folder.mkdir(parents=True, exist_ok=True)
    speech = {"teacher": espeak(TEACHER_TEXT, folder / "teacher_full.wav", 40),
              "pupil": espeak(PUPIL_TEXT, folder / "pupil_full.wav", 75)}
    out = {}
    for name, d in durations_s.items():
        kind = name.split("_")[0]
        n = round(d * 48000)
        src = speech[kind]
        if len(src) < n:
            raise RuntimeError(f"{kind} speech is {len(src) / 48000:.1f} s, need {d} s")
        path = folder / f"{name}.wav"
        write_wav(path, src[:n])
        out[name] = path
    return out
