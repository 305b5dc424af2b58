"""Shared pytest configuration for the whole suite.

Tests live in a folder per package they exercise: ``core/`` (the pure ``syncclass``
core), ``mixer/``, ``edge_agent/``, ``recorder/``, ``benchmarks/`` (the benchmarks' own
parts); ``browser/`` drives Debian's Chromium and ``integration/`` runs whole lessons
with real processes across packages. Helpers the benchmarks share too live in the
package ``syncclass/testing/`` (``browser``, ``speech_fixtures``, ``aec_room``,
``headcount_scenes``, ``report_data``); ``jack_support`` and the ``data/`` stay at this
level (``tests.jack_support``); ``county`` (the example county as a test's config,
the ``county`` fixture below) stays here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.county import County


@pytest.fixture
def county(tmp_path: Path) -> County:
    """The example county as editable data; :meth:`County.write` puts it in ``tmp_path``."""
    return County(tmp_path)
