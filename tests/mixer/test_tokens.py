"""Signed, expiring classroom tokens: issue/verify, rotation, refusal, and the mixer."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.app import create_app
from syncclass.config import parse_config
from syncclass.errors import AuthError
from syncclass.tokens import SigningKey, issue_token, looks_signed, verify_token

ROOT = Path(__file__).resolve().parents[2]
K1 = SigningKey("k2025", b"a" * 32)
K2 = SigningKey("k2026", b"b" * 32)
NOW = 1_800_000_000


def test_issue_and_verify_round_trip() -> None:
    token = issue_token(K1, "hetou-3", NOW + 3600)
    assert token.startswith("v1.hetou-3.") and looks_signed(token)
    claims = verify_token(token, [K1], NOW)
    assert (claims.classroom_id, claims.expires_s, claims.key_id) == ("hetou-3", NOW + 3600,
                                                                      "k2025")


def test_rotation_first_signs_all_verify() -> None:
    old = issue_token(K1, "hetou-3", NOW + 3600)
    new = issue_token(K2, "hetou-3", NOW + 3600)
    assert verify_token(old, [K2, K1], NOW).key_id == "k2025"
    assert verify_token(new, [K2, K1], NOW).key_id == "k2026"
    with pytest.raises(AuthError, match="unknown key"):
        verify_token(old, [K2], NOW)  # the old key was retired


@pytest.mark.parametrize("mutate, why", [
    (lambda t: t.replace("hetou-3", "shanping-3"), "signature"),  # pose as another room
    (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "signature"),
    (lambda t: t.replace(f".{NOW + 60}.", f".{NOW + 10**6}."), "signature"),  # extend
    (lambda t: t + "x", "malformed"),
    (lambda t: "v2" + t[2:], "malformed"),
    (lambda t: "", "malformed"),
])
def test_tampered_tokens_refused(mutate: object, why: str) -> None:
    token = issue_token(K1, "hetou-3", NOW + 60)
    with pytest.raises(AuthError, match=why) as info:
        verify_token(mutate(token), [K1], NOW)  # type: ignore[operator]
    assert info.value.code == "auth_failed"
    assert token not in info.value.message


def test_expired_token_refused() -> None:
    token = issue_token(K1, "hetou-3", NOW + 60)
    assert verify_token(token, [K1], NOW + 59)
    with pytest.raises(AuthError, match="expired"):
        verify_token(token, [K1], NOW + 60)


def test_key_repr_hides_secret() -> None:
    assert "aaaa" not in repr(K1) and "hidden" in repr(K1)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_verify_only_auth_errors(text: str) -> None:
    try:
        verify_token(text, [K1, K2], NOW)
    except AuthError as exc:
        assert exc.code == "auth_failed"


def _config(tmp: Path, allow_static: bool = True) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["mixer"]["token_keys"] = [{"id": "k2026", "secret": "s" * 40},
                                   {"id": "k2025", "secret": "t" * 40}]
    data["mixer"]["allow_static_tokens"] = allow_static
    data["mixer"]["data_dir"] = str(tmp / "data")
    data["mixer"]["joins_per_min"] = 3
    data["mixer"]["auth_failures_per_min"] = 4
    path = tmp / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_cli_token_issue_verifies_with_first_key(tmp_path: Path) -> None:
    path = _config(tmp_path)
    out = subprocess.run([sys.executable, "-m", "syncclass", "token", "issue", "--config",
                          str(path), "--classroom", "hetou-3", "--days", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    claims = verify_token(token, [SigningKey("k2026", b"s" * 40)], time.time())
    assert claims.classroom_id == "hetou-3"
    assert abs(claims.expires_s - (time.time() + 2 * 86400)) < 60
    bad = subprocess.run([sys.executable, "-m", "syncclass", "token", "issue", "--config",
                          str(path), "--classroom", "nobody"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unknown classroom" in bad.stderr


async def _hello(client: TestClient, cid: str, token: str) -> dict[str, object]:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "classroom_id": cid, "token": token})
        return dict(await ws.receive_json(timeout=5))


async def test_mixer_accepts_signed_refuses_posing_and_rate_limits(tmp_path: Path) -> None:
    config = parse_config(yaml.safe_load(_config(tmp_path, allow_static=False).read_text()))
    key = SigningKey("k2025", b"t" * 40)  # the second (old) key still verifies
    token = issue_token(key, "hetou-3", int(time.time()) + 600)
    async with TestClient(TestServer(create_app(config))) as client:
        assert (await _hello(client, "hetou-3", token))["type"] == "welcome"
        # A valid token of hetou-3 cannot pose as shanping-3.
        reply = await _hello(client, "shanping-3", token)
        assert reply["type"] == "error" and reply["code"] == "auth_failed"
        # Static tokens are off in this config.
        static = config.classroom("hetou-3").token
        assert (await _hello(client, "hetou-3", static))["code"] == "auth_failed"
        # Expired token.
        old = issue_token(key, "hetou-3", int(time.time()) - 1)
        assert (await _hello(client, "hetou-3", old))["code"] == "auth_failed"
        # 4 failures per minute per address: the next attempt is refused unchecked,
        # even with a valid credential.
        assert (await _hello(client, "hetou-3", "x" * 20))["code"] == "auth_failed"
        reply = await _hello(client, "hetou-3", token)
        assert reply["code"] == "rate_limited", reply
        # The HTTP API shares the limit.
        resp = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"},
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 429


async def test_joins_rate_limited_per_classroom(tmp_path: Path) -> None:
    config = parse_config(yaml.safe_load(_config(tmp_path).read_text()))
    token = config.classroom("hetou-3").token  # static tokens still work by default
    async with TestClient(TestServer(create_app(config))) as client:
        codes = [(await _hello(client, "hetou-3", token)).get("code", "welcome")
                 for _ in range(4)]
        assert codes == ["welcome", "welcome", "welcome", "rate_limited"], codes
        # Another classroom is not affected.
        other = config.classroom("shanping-3").token
        assert (await _hello(client, "shanping-3", other))["type"] == "welcome"
