#!/usr/bin/env bash
# A TURN relay (Debian's coturn) for classrooms behind NAT or a firewall, with the REST-API
# shared secret the mixer signs time-limited credentials with (mixer.turn.secret).
# Writes DATA_DIR/turnserver.conf (mode 600) and runs coturn in the foreground until killed
# (SIGTERM stops it); the caller deletes DATA_DIR. Listens on TURN_PORT for UDP and TCP and
# on TURN_TLS_PORT for TLS over TCP (turns:).
#
# Usage: TURN_SECRET=... scripts/turnserver.sh DATA_DIR
# Environment (the secret is read from the environment, never from argv, which ps shows):
#   TURN_SECRET       shared secret, >= 16 characters (required; = mixer.turn.secret)
#   TURN_LISTEN_IP    address to listen on (default 0.0.0.0: all)
#   TURN_PORT         UDP and TCP port (default 3478)
#   TURN_TLS_PORT     TLS port (default 5349; 443 in production: firewalls that allow
#                     only HTTPS let it through; binding it needs root or
#                     CAP_NET_BIND_SERVICE, and no other server on that address:443)
#   TURN_CERT, TURN_KEY  PEM certificate chain and key for TLS; when unset a self-signed
#                     certificate for TURN_CERT_NAMES is made in DATA_DIR (tests; agents
#                     then need mixer.turn.ca_file = DATA_DIR/turn-cert.pem)
#   TURN_CERT_NAMES   comma-separated DNS names / IPs of that certificate
#                     (default: localhost,127.0.0.1 and TURN_LISTEN_IP / TURN_EXTERNAL_IP)
#   TURN_RELAY_IP     address relayed media leaves from (default: the listening address)
#   TURN_EXTERNAL_IP  public address of a TURN server behind 1:1 NAT ("public/private"
#                     or just "public"); written into relay candidates
#   TURN_MIN_PORT, TURN_MAX_PORT  relay port range (default 49152-65535: open it in the
#                     firewall in front of the TURN server, UDP)
#   TURN_REALM        realm (default syncclass)
#   TURN_EXTRA        extra turnserver.conf lines, e.g. "denied-peer-ip=10.0.0.0-10.255.255.255"
set -euo pipefail
DATA="${1:?usage: TURN_SECRET=... turnserver.sh DATA_DIR}"
: "${TURN_SECRET:?turnserver: set TURN_SECRET (= mixer.turn.secret)}"
[ "${#TURN_SECRET}" -ge 16 ] || { echo "turnserver: TURN_SECRET must have >= 16 characters" >&2; exit 2; }
command -v turnserver >/dev/null || { echo "turnserver: Debian's coturn is not installed (scripts/bootstrap.sh)" >&2; exit 3; }
LISTEN="${TURN_LISTEN_IP:-0.0.0.0}"
PORT="${TURN_PORT:-3478}"
TLS_PORT="${TURN_TLS_PORT:-5349}"
mkdir -p "$DATA"
umask 077

CERT="${TURN_CERT:-}"
KEY="${TURN_KEY:-}"
if [ -z "$CERT" ] || [ -z "$KEY" ]; then
  CERT="$DATA/turn-cert.pem"
  KEY="$DATA/turn-key.pem"
  names="${TURN_CERT_NAMES:-localhost,127.0.0.1,$LISTEN${TURN_EXTERNAL_IP:+,${TURN_EXTERNAL_IP%%/*}}}"
  san=""
  IFS=',' read -ra parts <<<"$names"
  for n in "${parts[@]}"; do
    [ -z "$n" ] || [ "$n" = "0.0.0.0" ] && continue
    if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+="${san:+,}IP:$n"; else san+="${san:+,}DNS:$n"; fi
  done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=syncclass TURN" -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -keyout "$KEY" -out "$CERT" 2>/dev/null
fi
[ -r "$CERT" ] && [ -r "$KEY" ] || { echo "turnserver: cannot read $CERT / $KEY" >&2; exit 2; }

CONF="$DATA/turnserver.conf"
{
  echo "listening-port=$PORT"
  echo "tls-listening-port=$TLS_PORT"
  [ "$LISTEN" = "0.0.0.0" ] || echo "listening-ip=$LISTEN"
  if [ -n "${TURN_RELAY_IP:-}" ]; then echo "relay-ip=$TURN_RELAY_IP"
  elif [ "$LISTEN" != "0.0.0.0" ]; then echo "relay-ip=$LISTEN"; fi
  [ -z "${TURN_EXTERNAL_IP:-}" ] || echo "external-ip=$TURN_EXTERNAL_IP"
  echo "min-port=${TURN_MIN_PORT:-49152}"
  echo "max-port=${TURN_MAX_PORT:-65535}"
  echo "realm=${TURN_REALM:-syncclass}"
  echo "use-auth-secret"
  echo "static-auth-secret=$TURN_SECRET"
  echo "fingerprint"
  echo "cert=$CERT"
  echo "pkey=$KEY"
  echo "no-tlsv1"
  echo "no-tlsv1_1"
  echo "no-dtls"           # TLS over TCP only: aiortc/aioice speak no DTLS to TURN
  echo "no-multicast-peers"
  echo "no-cli"
  echo "no-rfc5780"
  echo "no-stun-backward-compatibility"
  echo "pidfile=$DATA/turnserver.pid"
  echo "userdb=$DATA/turndb"
  echo "log-file=stdout"
  echo "simple-log"
  [ -z "${TURN_EXTRA:-}" ] || printf '%s\n' "$TURN_EXTRA"
} >"$CONF"
exec turnserver -c "$CONF"
