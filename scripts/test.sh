#!/usr/bin/env bash
# Runs the test suite against real Kafka and MinIO:
#   start both (fail loudly if either does not come up), run .venv/bin/pytest "$@",
#   ALWAYS stop both afterwards (EXIT/INT/TERM), exit with pytest's exit code.
# pytest's 5 ("no tests collected") is a failure too.
# Expects .venv to exist (`make install`); `make test` does both.
# Env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), MINIO_PORT (19000),
#      MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (camflow / camflow-secret), TEST_BUCKET (camflow-test).
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_PORT="${KAFKA_PORT:-19092}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
export MINIO_PORT="${MINIO_PORT:-19000}"
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-camflow}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-camflow-secret}"
TEST_BUCKET="${TEST_BUCKET:-camflow-test}"

if [ ! -x .venv/bin/pytest ]; then
  echo "test.sh: .venv/bin/pytest not found; run 'make install' (or 'make test')" >&2
  exit 1
fi

PYTEST_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo "test.sh: stopping services"
  bash scripts/minio.sh stop || rc=$((rc == 0 ? 1 : rc))
  bash scripts/kafka.sh stop || rc=$((rc == 0 ? 1 : rc))
  exit "$rc"
}

# On INT/TERM: let pytest tear its fixtures down (KeyboardInterrupt), escalate if it hangs, then exit
# (the EXIT trap stops the services). A terminal Ctrl-C already reached pytest (same process group).
on_signal() {
  local sig=$1 code=$2
  trap '' INT TERM
  if [ -n "$PYTEST_PID" ] && kill -0 "$PYTEST_PID" 2>/dev/null; then
    [ "$sig" = TERM ] && kill -INT "$PYTEST_PID" 2>/dev/null
    local i
    for i in $(seq 1 60); do
      kill -0 "$PYTEST_PID" 2>/dev/null || break
      [ "$i" = 20 ] && kill -INT "$PYTEST_PID" 2>/dev/null
      sleep 0.5
    done
    kill -0 "$PYTEST_PID" 2>/dev/null && kill -KILL "$PYTEST_PID" 2>/dev/null
  fi
  echo "test.sh: interrupted by SIG$sig" >&2
  exit "$code"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

bash scripts/kafka.sh start
bash scripts/minio.sh start

export CAMFLOW_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export CAMFLOW_TEST_S3="http://127.0.0.1:$MINIO_PORT/$TEST_BUCKET"
export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER"
export AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"
export CAMFLOW_REQUIRE_SERVICES=1

# pytest runs in the background so that a TERM sent to this script is handled at once (bash defers
# traps while a foreground child runs); --default-signal undoes the SIGINT-ignore bash applies to
# background jobs, so Ctrl-C still becomes KeyboardInterrupt in pytest.
set +e
env --default-signal=INT .venv/bin/pytest "$@" &
PYTEST_PID=$!
wait "$PYTEST_PID"
rc=$?
set -e
PYTEST_PID=""

case $rc in
  0) echo "test.sh: pytest passed" ;;
  5) echo "test.sh: FAILED: pytest collected no tests (exit 5)" >&2 ;;
  *) echo "test.sh: FAILED: pytest exit code $rc" >&2 ;;
esac
exit "$rc"
