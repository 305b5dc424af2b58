"""TURN, the pure parts: URLs, coturn REST-API credentials, when to refresh them, SDP
address rewriting, the ``mixer.turn`` config (and the README's example of it).

A real coturn relaying media: ``tests/integration/test_turn_relay.py``; a classroom behind
a school NAT: ``tests/integration/test_turn_nat.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from syncclass.config import MixerConfig, TurnConfig
from syncclass.errors import ConfigError
from syncclass.protocol import IceServer, Welcome, parse_server_message
from syncclass.rtc import use_turn_ca_file
from syncclass.testing.turn_support import SECRET
from syncclass.turn import (
    TurnUrl,
    advertise_addresses,
    credential_expiry_s,
    credential_refresh_in_s,
    ice_servers_for,
    turn_credential,
)


def test_turn_url_parse() -> None:
    assert TurnUrl.parse("turn:turn.example.org") == TurnUrl(
        "turn:turn.example.org", "turn.example.org", 3478, "udp")
    assert TurnUrl.parse("turn:10.0.0.1:3478?transport=tcp").transport == "tcp"
    u = TurnUrl.parse("turns:turn.example.org:443?transport=tcp")
    assert (u.host, u.port, u.transport) == ("turn.example.org", 443, "tls")
    assert TurnUrl.parse("turns:[2001:db8::1]").port == 5349
    for bad in ("stun:x", "turn:", "turn:x:99999", "turns:x?transport=udp",
                "turn:x?transport=sctp", "http://x"):
        with pytest.raises(ValueError, match="TURN URL"):
            TurnUrl.parse(bad)


def test_rest_credentials() -> None:
    c = turn_credential(SECRET, "hetou-3", now_s=1_700_000_000.7, lifetime_s=3600)
    assert c.username == "1700003600:hetou-3" and c.expires_s == 1_700_003_600
    assert credential_expiry_s(c.username) == 1_700_003_600
    assert credential_expiry_s("plain-user") is None
    # base64 of a 20-byte HMAC-SHA1; changes with the secret and the user.
    assert len(c.credential) == 28 and c.credential.endswith("=")
    assert turn_credential("another-secret-0123", "hetou-3", 1_700_000_000, 3600).credential \
        != c.credential
    assert turn_credential(SECRET, "hetou-4", 1_700_000_000, 3600).credential != c.credential
    with pytest.raises(ValueError):
        turn_credential(SECRET, "a:b", 0, 10)
    with pytest.raises(ValueError):
        turn_credential("", "a", 0, 10)


def test_turn_config_hides_secret_and_checks_urls() -> None:
    cfg = TurnConfig(urls=["turn:10.0.0.1:3478?transport=tcp"], secret=SECRET)
    assert SECRET not in repr(cfg) and SECRET not in str(MixerConfig(turn=cfg))
    with pytest.raises(ValueError, match="not turn:HOST"):
        TurnConfig(urls=["stun:10.0.0.1"], secret=SECRET)
    with pytest.raises(ValueError):
        TurnConfig(urls=[], secret=SECRET)
    with pytest.raises(ValueError):
        TurnConfig(urls=["turn:x"], secret="short")
    servers = ice_servers_for(cfg, "hetou-3", 1000.0)
    assert servers[0].urls == cfg.urls and servers[0].username == "87400:hetou-3"
    assert ice_servers_for(None, "hetou-3", 1000.0) == []
    # The welcome carries them to the agent and survives the wire.
    w = Welcome(classroom_id="hetou-3", classroom_number=2, role="receiving", name="x",
                lesson=None, server_time_ms=1, ice_servers=servers)
    back = parse_server_message(w.model_dump_json())
    assert isinstance(back, Welcome) and back.ice_servers == servers


def test_advertise_addresses_rewrites_host_candidates() -> None:
    sdp = "\r\n".join([
        "v=0", "c=IN IP4 10.0.0.5",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host",
        "a=candidate:3 1 udp 16777215 10.0.0.5 50000 typ relay raddr 10.0.0.5 rport 1",
        ""])
    out = advertise_addresses(sdp, {"10.0.0.5": "203.0.113.7"}).split("\r\n")
    assert out[1] == "c=IN IP4 203.0.113.7"
    assert out[2] == "a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host"
    assert out[3].endswith("127.0.0.1 40001 typ host")
    assert out[4].startswith("a=candidate:3 1 udp 16777215 10.0.0.5 50000 typ relay")
    assert advertise_addresses(sdp, {}) == sdp


def test_turn_ca_file_errors_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mixer\.turn\.ca_file"):
        use_turn_ca_file(str(tmp_path / "missing.pem"))


def test_readme_turn_config_example_is_valid() -> None:
    """The README's ``mixer.turn`` example loads (with a real secret in place of "…")."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "turn:" in b)
    data = yaml.safe_load(block.replace('"…"', f'"{SECRET}"'))
    mixer = MixerConfig(**data["mixer"])
    assert mixer.turn is not None and len(mixer.turn.urls) == 3
    assert [TurnUrl.parse(u).transport for u in mixer.turn.urls] == ["udp", "tcp", "tls"]
    assert {str(k): str(v) for k, v in mixer.ice_advertised_addresses.items()} == {
        "10.0.0.5": "203.0.113.7"}


def test_credential_refresh_time() -> None:
    def servers(expiry: int) -> list[IceServer]:
        return [IceServer(urls=["turn:x"], username=f"{expiry}:hetou-3", credential="c")]

    # 24 h credentials: fetch new ones an hour before they expire.
    assert credential_refresh_in_s(servers(1000 + 86_400), 1000_000, 3600) == 86_400 - 3600
    # 20 min credentials: half-way, not at once.
    assert credential_refresh_in_s(servers(1000 + 1200), 1000_000, 3600) == 600
    # Already expired (the mixer's clock says so): at once.
    assert credential_refresh_in_s(servers(900), 1000_000, 3600) == 0
    assert credential_refresh_in_s([], 1000_000, 3600) is None
