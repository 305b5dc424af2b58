"""How fast a vanished peer is noticed: ICE consent freshness (RFC 7675) timers.

aioice checks consent every 5 s (±20 %) and closes the connection after 6 failed checks,
so a classroom PC switched off mid-lesson stays "connected" for about 30 s. The county
config (``mixer.ice_consent_interval_s``, ``mixer.ice_consent_failures``) shortens this;
each check that fails costs one STUN timeout (0.5 s) on top of the interval.
"""

from __future__ import annotations

import logging

import aioice.ice

logger = logging.getLogger(__name__)


def tighten_ice_consent(interval_s: float, failures: int) -> None:
    """Set aioice's consent check interval (s) and the failures that close a connection
    (process-wide; call before peer connections are created)."""
    if not hasattr(aioice.ice, "CONSENT_INTERVAL") or not hasattr(aioice.ice,
                                                                   "CONSENT_FAILURES"):
        raise RuntimeError("aioice changed: CONSENT_INTERVAL/CONSENT_FAILURES are gone")
    if interval_s <= 0 or failures < 1:
        raise ValueError("consent interval must be > 0 s and failures >= 1")
    aioice.ice.CONSENT_INTERVAL = interval_s  # type: ignore[assignment]
    aioice.ice.CONSENT_FAILURES = failures
    logger.debug("ICE consent: every %.1f s, %d failures close", interval_s, failures)


def consent_timeout_s(interval_s: float, failures: int, rto_s: float = 0.5) -> float:
    """Longest time (s) from a peer vanishing to its connection closing."""
    return failures * (interval_s * 1.2 + rto_s)
