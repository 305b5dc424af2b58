"""Shared pytest configuration for the whole suite.

Tests live in a folder per package they exercise: ``core/`` (the pure ``syncclass``
core), ``mixer/``, ``edge_agent/``, ``recorder/``, ``benchmarks/`` (the benchmarks' own
parts); ``browser/`` drives Debian's Chromium and ``integration/`` runs whole lessons
with real processes across packages. Helpers several folders share (``browser_support``,
``jack_support``, ``speech_fixtures``, ``aec_room``, ``headcount_scenes``) and their
``data/`` stay at this level and are imported as ``tests.<helper>``; so does
``county`` (the example county as a test's config, the ``county`` fixture below).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.county import County


@pytest.fixture
def county(tmp_path: Path) -> County:
    """The example county as editable data; :meth:`County.write` puts it in ``tmp_path``."""
    return County(tmp_path)
