"""The mixer's TLS server context (agents verify it with ``mixer.ca_file``)."""

from __future__ import annotations

import logging
import ssl

from syncclass.config import TlsConfig
from syncclass.errors import ConfigError

logger = logging.getLogger(__name__)


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``mixer.tls`` (certificate chain and key, PEM)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mixer.tls: cannot load certificate {tls.cert!r} / key "
                          f"{tls.key!r}: {exc}") from None
    return ctx

