#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, type check and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== import layers"
.venv/bin/lint-imports
echo "== pytest"
mkdir -p artifacts
.venv/bin/python -m pytest -ra "$@"
