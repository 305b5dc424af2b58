"""Ops passwords, session cookies, login rate limiting and webhook signatures."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from syncclass.auth import (
    LoginRateLimiter,
    RevokedSessions,
    SessionSigner,
    check_password_hash_format,
    hash_password,
    sign_webhook,
    verify_password,
    verify_webhook,
)
from syncclass.config import OpsUserConfig, default_config_path, load_config
from syncclass.errors import ConfigError
from tests.county import County


def test_password_round_trip_and_salt() -> None:
    a = hash_password("correct horse battery")
    b = hash_password("correct horse battery")
    assert a != b  # per-user random salt
    assert a.startswith("scrypt$14$8$1$")
    assert verify_password("correct horse battery", a)
    assert verify_password("correct horse battery", b)
    assert not verify_password("correct horse batterz", a)
    assert not verify_password("", a)


def test_malformed_hash_never_verifies() -> None:
    assert not verify_password("x", "plain-text-password")
    assert not verify_password("x", "")
    with pytest.raises(ValueError, match="hash-password"):
        check_password_hash_format("hunter2")
    with pytest.raises(ValueError):
        hash_password("")


def test_config_refuses_plain_password() -> None:
    with pytest.raises(ValueError, match="hash-password"):
        OpsUserConfig(name="ops", password_hash="hunter2hunter2")


def test_config_error_names_the_field(county: County) -> None:
    county.data["ops"]["users"][0]["password_hash"] = "plaintext-password"
    path = county.write("c.yaml")
    with pytest.raises(ConfigError, match=r"ops\.users\[0\]"):
        load_config(path)


def test_demo_user_in_default_config() -> None:
    config = load_config(default_config_path())
    users = {u.name: u.password_hash for u in config.ops.users}
    assert verify_password("syncclass-demo", users["ops"])  # documented in the README


def test_session_cookie_sign_verify_expire_tamper() -> None:
    signer = SessionSigner(b"k" * 32)
    value = signer.issue("ops", now_s=1000.0, lifetime_s=60)
    assert signer.verify(value, 1000.0) == "ops"
    assert signer.verify(value, 1059.0) == "ops"
    assert signer.verify(value, 1060.0) is None  # expired
    user, expires, sig = value.split(".")
    assert signer.verify(f"admin.{expires}.{sig}", 1000.0) is None
    assert signer.verify(f"{user}.{int(expires) + 9999}.{sig}", 1000.0) is None
    assert signer.verify(value[:-1] + ("0" if value[-1] != "0" else "1"), 1000.0) is None
    assert SessionSigner(b"j" * 32).verify(value, 1000.0) is None  # another secret
    assert signer.verify("", 1000.0) is None
    assert signer.verify("a.b", 1000.0) is None
    with pytest.raises(ValueError):
        SessionSigner(b"short")
    with pytest.raises(ValueError):
        signer.issue("bad.name", 0, 10)


def test_login_rate_limiter_window() -> None:
    lim = LoginRateLimiter(max_failures=3, window_s=60)
    for i in range(3):
        assert lim.blocked_for("ip:1", 100.0 + i) == 0
        lim.failed("ip:1", 100.0 + i)
    assert lim.blocked_for("ip:1", 103.0) == pytest.approx(57.0)
    assert lim.blocked_for("ip:2", 103.0) == 0  # other clients unaffected
    assert lim.blocked_for("ip:1", 160.5) == 0  # the first failure left the window
    lim.succeeded("ip:1")
    assert lim.blocked_for("ip:1", 103.0) == 0


def test_rate_limiter_memory_is_bounded() -> None:
    lim = LoginRateLimiter(max_failures=1, window_s=60, max_keys=100)
    for i in range(1000):
        lim.failed(f"ip:{i}", 1.0)
    assert len(lim._failures) <= 100


def test_webhook_signature() -> None:
    body = b'{"event":"alert"}'
    sig = sign_webhook(b"secret-0123456789", body, 1_700_000_000)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    ok = verify_webhook(b"secret-0123456789", body, "1700000000", sig, now_s=1_700_000_010)
    assert ok
    assert not verify_webhook(b"secret-0123456789", body + b" ", "1700000000", sig,
                              now_s=1_700_000_010)
    assert not verify_webhook(b"other-secret-000000", body, "1700000000", sig,
                              now_s=1_700_000_010)
    assert not verify_webhook(b"secret-0123456789", body, "1700000001", sig,
                              now_s=1_700_000_010)  # timestamp is signed too
    assert not verify_webhook(b"secret-0123456789", body, "1700000000", sig,
                              now_s=1_700_001_000)  # replay after the tolerance
    assert not verify_webhook(b"secret-0123456789", body, None, sig, now_s=0)


def test_hash_password_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "syncclass", "hash-password", "--user", "li"],
                          input="a-long-password\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].strip() == "- name: li"
    encoded = lines[1].split(": ", 1)[1].strip('"')
    assert verify_password("a-long-password", encoded)
    assert "a-long-password" not in proc.stdout
    short = subprocess.run([sys.executable, "-m", "syncclass", "hash-password"],
                           input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 10" in short.stderr


def test_logouts_are_shared_through_the_file(tmp_path: Path) -> None:
    """Two workers of one node (one file): a logout on one holds on the other and on a
    worker started afterwards; only the digest is written; an expired one is forgotten."""
    path = tmp_path / "data" / "sessions-revoked"
    a, b = RevokedSessions(path), RevokedSessions(path)
    assert not b.revoked("ops.2000000000.abc", 1000.0)
    a.revoke("ops.2000000000.abc", 2000.0)
    assert a.revoked("ops.2000000000.abc", 1000.0)
    assert b.revoked("ops.2000000000.abc", 1000.0)
    assert RevokedSessions(path).revoked("ops.2000000000.abc", 1000.0)
    assert not b.revoked("ops.2000000000.other", 1000.0)
    assert "ops." not in path.read_text()  # no usable cookie in the file
    assert not RevokedSessions(path).revoked("ops.2000000000.abc", 2000.0)  # expired


def test_logout_file_torn_line_and_unwritable(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A line still being written is read once complete; junk lines are skipped; a file
    that cannot be written is logged and the logout still holds in this process."""
    path = tmp_path / "sessions-revoked"
    reader = RevokedSessions(path)
    digest = RevokedSessions.digest("ops.2000000000.abc")
    path.write_text(f"not a line\n{digest} 20")
    assert not reader.revoked("ops.2000000000.abc", 1000.0)
    with path.open("a") as f:
        f.write("00\n")
    assert reader.revoked("ops.2000000000.abc", 1000.0)
    blocked = RevokedSessions(tmp_path / "a-file" / "sessions-revoked")
    (tmp_path / "a-file").write_text("in the way")
    with caplog.at_level(logging.ERROR, logger="syncclass.auth"):
        blocked.revoke("ops.2000000000.def", 2000.0)
    assert blocked.revoked("ops.2000000000.def", 1000.0)
    assert "accept the session until it expires" in caplog.text
