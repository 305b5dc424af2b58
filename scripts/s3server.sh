#!/usr/bin/env bash
# A local S3-compatible object store for tests and development: moto's server mode
# (PyPI "moto[server]", installed by scripts/bootstrap.sh through the dev extras).
# It keeps objects in memory: a restart starts empty (the recorder's archive can create
# its bucket: recorder.s3.create_bucket).
# Usage: scripts/s3server.sh [PORT (default 9000)] [HOST (default 127.0.0.1)]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/moto_server -H "${2:-127.0.0.1}" -p "${1:-9000}"
