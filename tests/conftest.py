"""Shared pytest configuration for the whole suite.

Tests live in a folder per package they exercise: ``core/`` (the pure ``syncclass``
core), ``mixer/``, ``edge_agent/``, ``recorder/``, ``media_server/``, ``benchmarks/``
(the benchmarks' own parts); ``browser/`` drives Debian's Chromium and ``integration/``
runs whole lessons with real processes across packages. Helpers several folders share
(``browser_support``, ``hls_support``, ``jack_support``, ``speech_fixtures``,
``aec_room``, ``headcount_scenes``) and their ``data/`` stay at this level and are
imported as ``tests.<helper>``.
"""
