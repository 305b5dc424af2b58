"""Shared pytest configuration for the whole suite.

Tests live in a folder per package they exercise: ``core/`` (the pure ``syncclass``
core), ``mixer/``, ``edge_agent/``, ``recorder/``, ``benchmarks/`` (the benchmarks' own
parts); ``browser/`` drives Debian's Chromium and ``integration/`` runs whole lessons
with real processes across packages. Helpers the benchmarks share too live in the
package ``syncclass/testing/`` (``browser``, ``speech_fixtures``, ``aec_room``,
``headcount_scenes``, ``report_data``); ``jack_support`` and the ``data/`` stay at this
level (``tests.jack_support``).
"""
