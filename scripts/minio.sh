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

install() {
  if [ -x "$BIN" ]; then return 0; fi
  mkdir -p "$(dirname "$BIN")"
  # One build at a time: a second `install` waits for the first and then finds the binary.
  exec 9>"$(dirname "$BIN")/../.install.lock"
  if ! flock -n 9; then
    echo "minio: another build of $MINIO_VERSION is running; waiting for it"
    flock 9
  fi
  if [ -x "$BIN" ]; then exec 9>&-; return 0; fi
  echo "minio: building github.com/minio/minio@$MINIO_VERSION with go install (takes a few minutes once)"
  # Build into a scratch GOBIN and rename, so $BIN never exists half-written.
  local tmpbin; tmpbin="$(mktemp -d "$(dirname "$BIN")/../gobin.XXXXXX")"
  if ! GOBIN="$tmpbin" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=mod \
      go install "github.com/minio/minio@$MINIO_VERSION"; then
    rm -rf "$tmpbin"; echo "minio: go install failed" >&2; exit 1
  fi
  mv -f "$tmpbin/minio" "$BIN"
  rm -rf "$tmpbin"
  exec 9>&-
}

# True when the PID in $PIDFILE is alive AND is our server (guards against a recycled PID).
running() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/data"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  install
  if running; then echo "minio: already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  rm -f "$PIDFILE"
  local p
  for p in "$PORT" "$CONSOLE_PORT"; do
    if port_open "$p"; then
      echo "minio: port 127.0.0.1:$p is already in use by another process (not started by this script);" \
        "stop it or set MINIO_PORT / MINIO_CONSOLE_PORT" >&2
      exit 1
    fi
  done
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
  local pid; pid="$(cat "$PIDFILE")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then echo "minio: pid $pid ignored SIGTERM for 10 s; SIGKILL" >&2; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  echo "minio: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "minio: running (pid $(cat "$PIDFILE"))"; else echo "minio: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
