#!/usr/bin/env bash
# A throwaway Redis (Debian's redis-server) for tests and development: no persistence (no
# RDB snapshot, no AOF), its working files in DATA_DIR, listening on HOST:PORT only.
# Runs in the foreground until killed (SIGTERM stops it cleanly); the caller deletes DATA_DIR.
# Usage: scripts/redisserver.sh DATA_DIR [PORT (default 6380)] [HOST (default 127.0.0.1)]
set -euo pipefail
DATA="${1:?usage: redisserver.sh DATA_DIR [PORT] [HOST]}"
PORT="${2:-6380}"
HOST="${3:-127.0.0.1}"
command -v redis-server >/dev/null || {
  echo "redisserver: Debian's redis-server is not installed (scripts/bootstrap.sh installs it)" >&2
  exit 3
}
mkdir -p "$DATA"
exec redis-server --bind "$HOST" --port "$PORT" --dir "$DATA" --save "" --appendonly no \
  --protected-mode no --daemonize no --logfile "" --loglevel warning
