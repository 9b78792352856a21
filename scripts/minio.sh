#!/usr/bin/env bash
# MinIO built from source with `go install`, on 127.0.0.1.
#   scripts/minio.sh install | start | stop | status
# Env: MINIO_PORT (9000), MINIO_CONSOLE_PORT (MINIO_PORT+1; console itself is off), MINIO_START_TIMEOUT (60 s),
#      MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (camflow / camflow-secret),
#      CAMFLOW_CACHE (~/.cache/camflow), CAMFLOW_RUN (.run in the repo).
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
  mkdir -p "$DIR/data"
  # setsid: own session, so a Ctrl-C / hang-up on the caller's terminal does not reach the server
  # (this script has no job control, so setsid execs in place and $! stays the server's PID).
  MINIO_BROWSER=off setsid nohup "$BIN" server "$DIR/data" --address "127.0.0.1:$PORT" \
    --console-address "127.0.0.1:$CONSOLE_PORT" </dev/null >"$DIR/minio.log" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${MINIO_START_TIMEOUT:-60}))
  until curl -sf -m 2 "http://127.0.0.1:$PORT/minio/health/ready" >/dev/null 2>&1; do
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
  echo "minio: started (pid $(cat "$PIDFILE")) on http://127.0.0.1:$PORT"
}

stop() {
  if ! running; then echo "minio: not running"; rm -f "$PIDFILE"; return 0; fi
  stop_pid minio "$PIDFILE" 40 0.25
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "minio: running (pid $(cat "$PIDFILE"))"; else echo "minio: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
