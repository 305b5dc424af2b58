#!/usr/bin/env bash
# A throwaway PostgreSQL (Debian's postgresql package) for tests and development: a new
# cluster in DATA_DIR, listening on 127.0.0.1:PORT only, trust auth, database "syncclass".
# Runs in the foreground until killed (SIGTERM stops it cleanly); the caller deletes DATA_DIR.
# Usage: scripts/pgserver.sh DATA_DIR [PORT (default 5433)]
# As root, the cluster is owned by the "postgres" system user (initdb refuses root).
set -euo pipefail
DATA="${1:?usage: pgserver.sh DATA_DIR [PORT]}"
PORT="${2:-5433}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$BIN/postgres" ] || { echo "pgserver: Debian's postgresql is not installed" >&2; exit 3; }
RUN=()
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p "$DATA"
  chown postgres "$DATA"
  RUN=(runuser -u postgres --)
fi
"${RUN[@]}" "$BIN/initdb" -D "$DATA/db" -U postgres -A trust --no-sync -E UTF8 >/dev/null
exec "${RUN[@]}" "$BIN/postgres" -D "$DATA/db" -h 127.0.0.1 -p "$PORT" -k "$DATA" \
  -c fsync=off -c full_page_writes=off
