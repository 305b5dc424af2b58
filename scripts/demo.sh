#!/usr/bin/env bash
# One whole lesson on this machine: mixer + a main and two receiving classrooms with
# synthetic camera and microphone. Usage: scripts/demo.sh [--duration S] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/syncclass demo "$@"
