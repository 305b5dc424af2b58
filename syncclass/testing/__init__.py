"""Test support shared by ``tests/`` and ``benchmarks/``: synthetic rooms, speech, scenes,
report data and browser helpers that produce known ground truth.

Not part of the running system: the mixer, agents and recorder never import it. It sits
above every other layer (it builds inputs for ``mixer`` and ``edge_agent`` code, like the
CLI does), so it may import them; nothing but tests and benchmarks imports it. Some
helpers need test-only tools (espeak-ng, playwright with Debian's chromium).
"""
