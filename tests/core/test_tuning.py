"""Process-wide tuning the media commands apply at start-up (syncclass/cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = ("import cv2; from syncclass.cli import _tune_opencv; before = cv2.getNumThreads(); "
          "_tune_opencv(); print(before, cv2.getNumThreads())")


@pytest.mark.parametrize(("setting", "expect_one"), [(None, True), ("default", False)])
def test_opencv_runs_on_the_calling_thread(setting: str | None, expect_one: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SYNCCLASS_CV_THREADS"}
    env["OPENCV_FOR_THREADS_NUM"] = "2"  # as on the 2-core machines we run on
    if setting is not None:
        env["SYNCCLASS_CV_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before == 2
    assert after == (1 if expect_one else before)


def test_opencv_thread_setting_rejects_garbage_clearly() -> None:
    env = dict(os.environ, SYNCCLASS_CV_THREADS="two")
    run = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True)
    assert run.returncode != 0
    assert "SYNCCLASS_CV_THREADS must be a thread count or 'default', got 'two'" in run.stderr
    assert "Traceback" not in run.stderr
