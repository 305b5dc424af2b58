#!/usr/bin/env bash
# A throwaway PostgreSQL (Debian's postgresql package) for tests and development: a new
# cluster in DATA_DIR, listening on HOST:PORT only (default 127.0.0.1), trust auth, database
# "postgres". With another HOST (a test LAN's address), clients on HOST's own subnets are
# trusted too ("samenet"), so nodes on that LAN can write reports.
# Runs in the foreground until killed (SIGTERM stops it cleanly); the caller deletes DATA_DIR.
# Usage: scripts/pgserver.sh DATA_DIR [PORT (default 5433)] [HOST (default 127.0.0.1)]
# As root, the cluster is owned by the "postgres" system user (initdb refuses root).
set -euo pipefail
DATA="${1:?usage: pgserver.sh DATA_DIR [PORT]}"
PORT="${2:-5433}"
HOST="${3:-127.0.0.1}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$BIN/postgres" ] || { echo "pgserver: Debian's postgresql is not installed" >&2; exit 3; }
RUN=()
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p "$DATA"
  chown postgres "$DATA"
  RUN=(runuser -u postgres --)
fi
"${RUN[@]}" "$BIN/initdb" -D "$DATA/db" -U postgres -A trust --no-sync -E UTF8 >/dev/null
if [ "$HOST" != "127.0.0.1" ]; then
  echo "host all all samenet trust" >>"$DATA/db/pg_hba.conf"
fi
exec "${RUN[@]}" "$BIN/postgres" -D "$DATA/db" -h "$HOST" -p "$PORT" -k "$DATA" \
  -c fsync=off -c full_page_writes=off
