#!/usr/bin/env bash
# Two regions on one machine, A and B: each a Kafka of its own (scripts/kafka.sh) and a MinIO of its own
# (scripts/minio.sh), the two MinIOs linked by MinIO site replication (active-active: an object or bucket
# written in either region is copied to the other; a region that was away catches up when it is back).
#   scripts/regions.sh start            both regions' Kafka and MinIO (fresh data), then link the MinIOs
#                                       (`camflow regions link`) and make the bucket once, after the link,
#                                       so that replication makes it in the other region too
#   scripts/regions.sh stop             stop every Kafka and MinIO that start started (by PID, through the scripts)
#   scripts/regions.sh status           each service's state and each MinIO's replication (`camflow regions status`)
#   scripts/regions.sh env              the endpoints as shell assignments (REGION_A_KAFKA=127.0.0.1:P,
#                                       REGION_A_S3=http://127.0.0.1:P/BUCKET, REGION_A_RUN=..., same for B)
#   scripts/regions.sh stop-kafka R | start-kafka R    one region's Kafka down / up again on its data (an outage)
#   scripts/regions.sh stop-minio R | start-minio R    one region's MinIO down / up again on its data (it resyncs)
#   scripts/regions.sh demo             start, then one `camflow run` per region on ports of its own (--region,
#                                       --region-edge-url), prints where to push and watch; Ctrl-C stops all
# Env: CAMFLOW_RUN (.run in the repo; region R's files under $CAMFLOW_RUN/regions/R),
#      REGION_A_KAFKA_PORT (28092), REGION_A_KAFKA_CONTROLLER_PORT (28093), REGION_A_MINIO_PORT (28100),
#      REGION_B_KAFKA_PORT (28192), REGION_B_KAFKA_CONTROLLER_PORT (28193), REGION_B_MINIO_PORT (28200)
#      (clear of the test services' 19092/19000, the chaos suite's 29092../29000, the other tests' 3xxxx),
#      REGIONS_BUCKET (camflow), MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (camflow / camflow-secret: both MinIOs
#      share them, site replication needs that), CAMFLOW_PYTHON (the interpreter that runs this checkout's
#      camflow: .venv/bin/python when there, else python3).
#      demo: REGION_A_HTTP_PORT (8080), REGION_A_RTSP_PORT (8554), REGION_A_UDP_PORTS (20000-20499),
#      REGION_A_WEBRTC_PORTS (40000-40499), and for B 8180, 8654, 20500-20999, 40500-40999; STREAM (cam1).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CAMFLOW_RUN:-$ROOT/.run}"
TOP="$RUN/regions"
BUCKET="${REGIONS_BUCKET:-camflow}"
REGIONS=(A B)
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-camflow}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-camflow-secret}"
# This checkout's camflow (PYTHONPATH), run by its venv's interpreter unless CAMFLOW_PYTHON names one.
PY="${CAMFLOW_PYTHON:-}"
if [ -z "$PY" ]; then if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi; fi
camflow() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m camflow.cli "$@"; }

# Every region's ports, from REGION_<R>_<NAME> in the environment, else the region's default; checked
# here, once, in the main shell (a check inside a $(...) could not stop the script).
declare -A KAFKA_P CONTROLLER_P MINIO_P
setport() {  # setport ARRAY R NAME DEFAULT
  local var="REGION_$2_$3" value
  value="${!var:-$4}"
  [[ "$value" =~ ^[0-9]+$ ]] && [ "$value" -ge 1 ] && [ "$value" -le 65535 ] || {
    echo "regions: $var must be a port number, not '$value'" >&2; exit 2; }
  printf -v "$1[$2]" '%s' "$value"
}
setport KAFKA_P A KAFKA_PORT 28092; setport CONTROLLER_P A KAFKA_CONTROLLER_PORT 28093; setport MINIO_P A MINIO_PORT 28100
setport KAFKA_P B KAFKA_PORT 28192; setport CONTROLLER_P B KAFKA_CONTROLLER_PORT 28193; setport MINIO_P B MINIO_PORT 28200

region_arg() {
  [[ "${1:-}" =~ ^(A|B)$ ]] || { echo "regions: region must be A or B, not '${1:-}'" >&2; exit 2; }
}

# in_region R SCRIPT ARGS...: scripts/SCRIPT.sh ARGS with region R's run directory and ports
in_region() {
  local r="$1" script="$2"; shift 2
  CAMFLOW_RUN="$TOP/$r" KAFKA_PORT="${KAFKA_P[$r]}" KAFKA_CONTROLLER_PORT="${CONTROLLER_P[$r]}" \
    KAFKA_BROKERS=1 MINIO_PORT="${MINIO_P[$r]}" MINIO_DRIVES=1 MINIO_TLS=0 KAFKA_TLS=0 \
    bash "$ROOT/scripts/$script.sh" "$@" | sed -u "s/^/[$r] /"
}

sites() { local r; for r in "${REGIONS[@]}"; do printf -- '--site %s=http://127.0.0.1:%s ' "$r" "${MINIO_P[$r]}"; done; }

# camflow regions ARGS with the MinIOs' root credentials (from the environment, never argv)
regions_cli() {
  # shellcheck disable=SC2046  # sites() is words by design
  AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD" camflow regions "$@" $(sites)
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# A start that fails half-way stops what it started: no half a deployment left running.
failed_start() { echo "regions: $1 failed; stopping what was started" >&2; stop >&2 || true; exit 1; }

start() {
  local r t0
  for r in "${REGIONS[@]}"; do
    mkdir -p "$TOP/$r"
    t0=$(now_ms); in_region "$r" kafka start || failed_start "region $r kafka start"
    echo "regions: region $r kafka up in $(( $(now_ms) - t0 )) ms"
    # Scratch like Kafka's: a MinIO that is not running starts on empty data, so the link below is
    # made fresh (a stale replication config of other ports would refuse it). start-minio keeps the data.
    if ! in_region "$r" minio status >/dev/null 2>&1; then rm -rf "$TOP/$r/minio/data"; fi
    t0=$(now_ms); in_region "$r" minio start || failed_start "region $r minio start"
    echo "regions: region $r minio up in $(( $(now_ms) - t0 )) ms"
  done
  t0=$(now_ms); regions_cli link --bucket "$BUCKET" || failed_start "linking the MinIOs"
  echo "regions: site replication set up in $(( $(now_ms) - t0 )) ms"
  print_env | sed 's/^/regions: /'
}

stop() {
  local r status=0
  for r in "${REGIONS[@]}"; do
    [ -d "$TOP/$r" ] || continue
    in_region "$r" minio stop || status=1
    in_region "$r" kafka stop || status=1
  done
  return $status
}

status() {
  local r status=0
  for r in "${REGIONS[@]}"; do
    in_region "$r" kafka status || status=1
    in_region "$r" minio status || status=1
  done
  regions_cli status || status=1
  return $status
}

print_env() {
  local r
  for r in "${REGIONS[@]}"; do
    echo "REGION_${r}_KAFKA=127.0.0.1:${KAFKA_P[$r]}"
    echo "REGION_${r}_S3=http://127.0.0.1:${MINIO_P[$r]}/$BUCKET"
    echo "REGION_${r}_RUN=$TOP/$r"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  stop-kafka) region_arg "${2:-}"; in_region "$2" kafka stop ;;
  start-kafka) region_arg "${2:-}"; in_region "$2" kafka resume ;;
  stop-minio) region_arg "${2:-}"; in_region "$2" minio stop ;;
  start-minio) region_arg "${2:-}"; in_region "$2" minio resume ;;
  demo) exec bash "$ROOT/scripts/regions_demo.sh" ;;
  *) echo "usage: $0 start|stop|status|env|stop-kafka R|start-kafka R|stop-minio R|start-minio R|demo" >&2; exit 2 ;;
esac
