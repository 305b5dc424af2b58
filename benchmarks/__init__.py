"""Benchmarks: scripts that measure and write JSON under ``benchmarks/results/``.

Run each from the repository root as a module, e.g. ``.venv/bin/python -m benchmarks.micro
--rounds 5``. :mod:`benchmarks.harness` writes every result with the environment it was
measured in; :mod:`benchmarks._common` starts and measures lessons of real processes.
"""
