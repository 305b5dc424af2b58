"""The SYNCCLASS_* environment switches are read in one place (syncclass.switches), bad
values are refused with the variable's name, and secrets never show in a repr."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from syncclass.auth import hash_password
from syncclass.config import default_config_path, parse_config
from syncclass.errors import ConfigError
from syncclass.switches import Switches, default_state_dir


def test_defaults_without_any_switch() -> None:
    sw = Switches.from_environ({})
    assert (sw.audio_level, sw.jitter_buffer, sw.nack, sw.audio_decode, sw.mix_opus, sw.gc) == (
        "numpy", "low-latency", "bounded", "inline", "mixer", "tuned")
    assert sw.video_jitter_buffer and sw.audio_jitter_buffer
    assert sw.video_hole_wait_s is None and sw.cv_threads == 1 and sw.ops_api_token is None
    assert sw.state_dir == default_state_dir({})


def test_every_switch_is_read() -> None:
    sw = Switches.from_environ({
        "SYNCCLASS_AUDIO_LEVEL": "stock", "SYNCCLASS_JITTER_BUFFER": "audio",
        "SYNCCLASS_VIDEO_HOLE_WAIT_S": "inf", "SYNCCLASS_NACK": "stock",
        "SYNCCLASS_AUDIO_DECODE": "thread", "SYNCCLASS_MIX_OPUS": "aiortc",
        "SYNCCLASS_GC": "default", "SYNCCLASS_CV_THREADS": "default",
        "SYNCCLASS_OPS_API_TOKEN": "ops-token-0123456789", "SYNCCLASS_STATE_DIR": "/tmp/st",
    })
    assert (sw.audio_level, sw.nack, sw.audio_decode, sw.mix_opus, sw.gc) == (
        "stock", "stock", "thread", "aiortc", "default")
    assert not sw.video_jitter_buffer and sw.audio_jitter_buffer
    assert sw.video_hole_wait_s is not None and math.isinf(sw.video_hole_wait_s)
    assert sw.cv_threads is None
    assert sw.ops_api_token == "ops-token-0123456789"
    assert sw.state_dir == Path("/tmp/st")
    assert "ops-token-0123456789" not in repr(sw)


@pytest.mark.parametrize(("name", "value"), [
    ("SYNCCLASS_NACK", "off"), ("SYNCCLASS_JITTER_BUFFER", "none"),
    ("SYNCCLASS_VIDEO_HOLE_WAIT_S", "soon"), ("SYNCCLASS_VIDEO_HOLE_WAIT_S", "-1"),
    ("SYNCCLASS_CV_THREADS", "two"),
])
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Switches.from_environ({name: value})


def test_secrets_of_the_config_are_hidden_in_repr() -> None:
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    secrets = {
        "session": "session-secret-0123456789",
        "api": "api-token-secret-0123456789",
        "metrics": "metrics-token-0123456789",
        "webhook": "webhook-secret-0123456789",
        "s3key": "AKIA-S3-KEY-ID-0123",
        "s3secret": "s3-secret-access-key-0123456789",
        "db": "postgresql://report:db-password-0123@db/reports",
    }
    ops = data.setdefault("ops", {})
    ops.update(session_secret=secrets["session"], api_token=secrets["api"],
               metrics_token=secrets["metrics"],
               webhooks=[{"url": "https://hooks.example/x", "secret": secrets["webhook"]}],
               users=[{"name": "admin", "password_hash": hash_password("a long password")}])
    data.setdefault("recorder", {}).update(archive="s3", s3={
        "bucket": "lessons", "access_key_id": secrets["s3key"],
        "secret_access_key": secrets["s3secret"]})
    data.setdefault("analytics", {})["database_url"] = secrets["db"]
    config = parse_config(data)
    shown = repr(config) + str(config)
    for secret in [*secrets.values(), config.ops.users[0].password_hash,
                   *(c.token for c in config.classrooms), *(o.token for o in config.observers)]:
        assert secret not in shown, secret
    assert config.ops.api_token == secrets["api"]  # hidden from repr, not lost
