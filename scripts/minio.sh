#!/usr/bin/env bash
# MinIO built from source with `go install`, on 127.0.0.1.
#   scripts/minio.sh install | start | stop | status
#   scripts/minio.sh resume        start again on the data a stop left (an outage; start wipes a drive set)
#   scripts/minio.sh drive-off N   (MINIO_DRIVES > 1) take drive N away from the running server
#   scripts/minio.sh drive-on N    put a new, empty drive N in its place (a replaced disk: MinIO heals it)
# Env: MINIO_PORT (9000), MINIO_CONSOLE_PORT (MINIO_PORT+1; console itself is off), MINIO_START_TIMEOUT (60 s),
#      MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (camflow / camflow-secret), MINIO_DRIVES (1),
#      CAMFLOW_CACHE (~/.cache/camflow), CAMFLOW_RUN (.run in the repo), MINIO_TLS (0).
# MINIO_TLS=1 serves HTTPS instead of HTTP: a test CA and a certificate for 127.0.0.1 and localhost
# are made with openssl into $CAMFLOW_RUN/minio/tls (kept while tls/ca.crt exists) and handed to
# MinIO as its --certs-dir (public.crt, private.key); clients trust tls/ca.crt (AWS_CA_BUNDLE).
# With MINIO_DRIVES=N > 1 (4 or more for erasure coding with parity) the server runs on N drives,
# .run/minio/data/drive1..N, erasure coded (4 drives: EC 2, any one drive may go); MINIO_CI_CD=on lets
# MinIO use drives that share the root disk, as they do on a test machine.
set -euo pipefail
# The Go module proxy serves only the archived repository's last commit (the RELEASE.* tags answer
# "403 not available"), so we pin that pseudo-version.
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CACHE="${CAMFLOW_CACHE:-$HOME/.cache/camflow}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CAMFLOW_RUN:-$ROOT/.run}"
PORT="${MINIO_PORT:-9000}"
CONSOLE_PORT="${MINIO_CONSOLE_PORT:-$((PORT + 1))}"
BIN="$CACHE/minio-$MINIO_VERSION/bin/minio"
DIR="$RUN/minio"
PIDFILE="$DIR/minio.pid"
TLS="${MINIO_TLS:-0}"
SCHEME=http; [ "$TLS" = 1 ] && SCHEME=https
DRIVES="${MINIO_DRIVES:-1}"
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-camflow}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-camflow-secret}"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

install() { go_install_cached minio github.com/minio/minio "$MINIO_VERSION" "$BIN" "$CACHE"; }

running() { pid_running "$PIDFILE" "$DIR/data"; }

start() {
  install
  if running; then echo "minio: already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  rm -f "$PIDFILE"
  ports_free minio "MINIO_PORT / MINIO_CONSOLE_PORT" "$PORT" "$CONSOLE_PORT"
  [[ "$DRIVES" =~ ^[1-9][0-9]*$ ]] || { echo "minio: MINIO_DRIVES must be a positive number, not '$DRIVES'" >&2; exit 2; }
  local volumes="$DIR/data" ci_cd=""
  if [ "$DRIVES" -gt 1 ]; then
    # Erasure-coded drives are formatted together: a fresh set each start (scratch, like Kafka's data),
    # unless this is a resume after an outage.
    [ "${1:-}" = resume ] || rm -rf "$DIR/data"
    local i; for i in $(seq 1 "$DRIVES"); do mkdir -p "$DIR/data/drive$i"; done
    volumes="$DIR/data/drive{1...$DRIVES}"  # MinIO's own ellipsis notation, not a shell brace expansion
    ci_cd=on
  fi
  mkdir -p "$DIR/data"
  local certs=() probe_ca=()
  if [ "$TLS" = 1 ]; then
    tls_ca minio "$DIR/tls"
    [ -f "$DIR/tls/server.crt" ] || tls_leaf minio "$DIR/tls" server localhost
    mkdir -p "$DIR/certs"; chmod 700 "$DIR/certs"
    cp "$DIR/tls/server.crt" "$DIR/certs/public.crt"; cp "$DIR/tls/server.key" "$DIR/certs/private.key"
    certs=(--certs-dir "$DIR/certs"); probe_ca=(--cacert "$DIR/tls/ca.crt")
  fi
  # setsid: own session, so a Ctrl-C / hang-up on the caller's terminal does not reach the server
  # (this script has no job control, so setsid execs in place and $! stays the server's PID).
  MINIO_CI_CD="$ci_cd" MINIO_BROWSER=off setsid nohup "$BIN" server "$volumes" --address "127.0.0.1:$PORT" \
    --console-address "127.0.0.1:$CONSOLE_PORT" "${certs[@]}" </dev/null >"$DIR/minio.log" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${MINIO_START_TIMEOUT:-60}))
  # Several drives: ready answers while the drives are still being formatted; cluster only once the
  # erasure set has its write quorum.
  local probe=ready; [ "$DRIVES" = 1 ] || probe=cluster
  until curl -sf -m 2 "${probe_ca[@]}" "$SCHEME://127.0.0.1:$PORT/minio/health/$probe" >/dev/null 2>&1; do
    if ! running; then
      echo "minio: exited during start-up; see $DIR/minio.log" >&2; tail -n 30 "$DIR/minio.log" >&2 || true
      rm -f "$PIDFILE"; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "minio: not ready within ${MINIO_START_TIMEOUT:-60} s; stopping it; see $DIR/minio.log" >&2
      tail -n 30 "$DIR/minio.log" >&2 || true
      stop >&2; exit 1
    fi
    sleep 0.25
  done
  echo "minio: started (pid $(cat "$PIDFILE")) on $SCHEME://127.0.0.1:$PORT$([ "$DRIVES" = 1 ] || echo " ($DRIVES drives, erasure coded)")"
  [ "$TLS" = 1 ] && echo "minio: clients trust the test CA $DIR/tls/ca.crt (e.g. AWS_CA_BUNDLE=$DIR/tls/ca.crt)"
  return 0
}

drive_arg() {
  [ "$DRIVES" -gt 1 ] || { echo "minio: drive-off/drive-on need MINIO_DRIVES > 1 (as at start)" >&2; exit 2; }
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$DRIVES" ] || {
    echo "minio: drive must be 1..$DRIVES (MINIO_DRIVES), not '${1:-}'" >&2; exit 2; }
}

drive_off() {
  local d="$DIR/data/drive$1"
  [ -d "$d" ] || { echo "minio: drive $1 is already away"; return 0; }
  rm -rf "$d.off"; mv "$d" "$d.off"
  echo "minio: drive $1 taken away"
}

drive_on() {
  local d="$DIR/data/drive$1"
  [ -d "$d" ] && { echo "minio: drive $1 is in place"; return 0; }
  rm -rf "$d.off"; mkdir -p "$d"
  echo "minio: drive $1 replaced by an empty one (MinIO heals it)"
}

stop() {
  if ! running; then echo "minio: not running"; rm -f "$PIDFILE"; return 0; fi
  stop_pid minio "$PIDFILE" 40 0.25
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  resume) [ -d "$DIR/data" ] || { echo "minio: nothing to resume (run start first)" >&2; exit 1; }; start resume ;;
  stop) stop ;;
  drive-off) drive_arg "${2:-}"; drive_off "$2" ;;
  drive-on) drive_arg "${2:-}"; drive_on "$2" ;;
  status) if running; then echo "minio: running (pid $(cat "$PIDFILE"))"; else echo "minio: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|resume|stop|status|drive-off N|drive-on N" >&2; exit 2 ;;
esac
