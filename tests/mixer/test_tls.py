"""Signaling, the join page and the dashboard over TLS with a self-signed certificate
made here; a real agent process connects with wss and mixer.ca_file. Credentials never
appear in logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mixer.app import create_app
from mixer.core import MIXER_KEY
from mixer.tls import server_ssl_context
from syncclass.config import parse_config
from syncclass.demo import free_port
from syncclass.errors import ConfigError
from syncclass.tokens import SigningKey, issue_token

ROOT = Path(__file__).resolve().parents[2]
SECRET = "county-signing-secret-0123456789abcdef"


def make_cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncclass test mixer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "mixer.crt", tmp / "mixer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_signaling_pages_and_agent(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["mixer"].update(url=f"https://127.0.0.1:{port}", port=port,
                         data_dir=str(tmp_path / "data"), ca_file=str(cert),
                         tls={"cert": str(cert), "key": str(key)},
                         token_keys=[{"id": "k1", "secret": SECRET}])
    data["analytics"] = {"enabled": False}
    config_path = tmp_path / "county.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = parse_config(data)
    assert config.mixer.tls is not None
    signed = issue_token(SigningKey("k1", SECRET.encode()), "hetou-3", 2_000_000_000)
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl_context(config.mixer.tls))
    await site.start()
    caplog.set_level(logging.DEBUG)
    # Earlier tests may have configured logging (dictConfig disables existing loggers).
    access = logging.getLogger("aiohttp.access")
    access.disabled, access.propagate = False, True
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    agent: subprocess.Popen[bytes] | None = None
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            # The join page and the dashboard login are served over HTTPS.
            for page in ("/join", "/dashboard/login"):
                async with http.get(f"https://127.0.0.1:{port}{page}", ssl=trusted) as resp:
                    assert resp.status == 200 and "<html" in (await resp.text()).lower()
            # wss signaling with a signed token.
            async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trusted) as ws:
                await ws.send_json({"type": "hello", "classroom_id": "hetou-3",
                                    "token": signed})
                assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            # A wrong credential (logged as refused, never shown).
            async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trusted) as ws:
                await ws.send_json({"type": "hello", "classroom_id": "hetou-3",
                                    "token": signed[:-2] + "zz"})
                assert (await ws.receive_json(timeout=5))["code"] == "auth_failed"
            # A credential in a query string (refused: query tokens are no credential here)
            # never reaches the access log, which logs paths without their query.
            async with http.get(f"https://127.0.0.1:{port}/api/lessons?token={signed}",
                                ssl=trusted) as resp:
                assert resp.status == 401
            # Without the CA the certificate is refused; plain HTTP gets no answer.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{port}/healthz")
            with pytest.raises(aiohttp.ClientError):
                await http.get(f"http://127.0.0.1:{port}/healthz",
                               timeout=aiohttp.ClientTimeout(total=5))
        # A real agent process: wss, verifying with mixer.ca_file, signed token.
        log = tmp_path / "agent.log"
        with log.open("wb") as fh:
            agent = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "syncclass", "--log-level", "debug", "agent", "--config",
                 str(config_path), "--classroom", "hetou-3", "--token", signed,
                 "--control-port", str(free_port())], stdout=fh, stderr=subprocess.STDOUT)
        mixer = app[MIXER_KEY]
        for _ in range(300):
            if "hetou-3" in mixer.sessions:
                break
            await asyncio.sleep(0.1)
        assert "hetou-3" in mixer.sessions, log.read_text()[-3000:]
    finally:
        if agent is not None:
            agent.terminate()
            await asyncio.get_running_loop().run_in_executor(None, agent.wait, 20)
        await runner.cleanup()
    # Secrets never in logs: the signing secret, signed tokens (and their MACs), static tokens.
    texts = [r.getMessage() for r in caplog.records] + [log.read_text()]
    everything = "\n".join(texts)
    assert "refused" in everything  # the failed hello was logged ...
    assert '"GET /api/lessons HTTP/1.1" 401' in everything  # ... and the request, redacted
    for secret in (SECRET, signed, signed.rsplit(".", 1)[1],
                   config.classroom("hetou-3").token, config.classroom("main-3-1").token):
        assert secret not in everything


def test_bad_certificate_paths_clear_error(tmp_path: Path) -> None:
    from syncclass.config import TlsConfig

    with pytest.raises(ConfigError, match="cannot load certificate"):
        server_ssl_context(TlsConfig(cert=str(tmp_path / "no.crt"), key=str(tmp_path / "no.key")))
