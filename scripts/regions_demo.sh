#!/usr/bin/env bash
# The two-region demo (`make regions`, `scripts/regions.sh demo`): both regions' Kafka and MinIO
# (scripts/regions.sh start: the MinIOs linked by site replication), then one `camflow run` per region on
# ports of its own, each on its region's Kafka and MinIO, with --region NAME and --region-edge-url (its
# own edge); prints where to push and watch in each region, and stops everything on Ctrl-C (or when one
# camflow exits): the camflow processes by PID, then the backends through scripts/regions.sh stop.
# Both regions sign and check tokens with the same keys (copies of $CAMFLOW_RUN/regions/secret), so a token
# of one region is good in the other (a viewer sent from one region's edge to the other's).
# Env: everything scripts/regions.sh reads, and per region R (A, B):
#      REGION_R_HTTP_PORT (A 8080, B 8180), REGION_R_RTSP_PORT (A 8554, B 8654),
#      REGION_R_UDP_PORTS (A 20000-20499, B 20500-20999), REGION_R_WEBRTC_PORTS (A 40000-40499, B 40500-40999);
#      STREAM (cam1, the stream whose URLs are printed), CAMFLOW_RUN_ARGS (more `camflow run` flags, both regions).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CAMFLOW_RUN:-$ROOT/.run}"
TOP="$RUN/regions"
BUCKET="${REGIONS_BUCKET:-camflow}"
STREAM="${STREAM:-cam1}"
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-camflow}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-camflow-secret}"
PY="${CAMFLOW_PYTHON:-}"
if [ -z "$PY" ]; then if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

setting() {  # setting R NAME DEFAULT_A DEFAULT_B: REGION_R_NAME, else the region's default
  local var="REGION_$1_$2"
  echo "${!var:-$([ "$1" = A ] && echo "$3" || echo "$4")}"
}

declare -A PIDS=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return 0
  stopping=1
  trap '' INT TERM
  local r pid
  for r in "${!PIDS[@]}"; do
    pid="${PIDS[$r]}"
    kill -0 "$pid" 2>/dev/null || continue
    echo "regions demo: stopping region $r's camflow (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for r in "${!PIDS[@]}"; do
    pid="${PIDS[$r]}"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then echo "regions demo: pid $pid ignored SIGTERM; SIGKILL" >&2; kill -9 "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  bash "$ROOT/scripts/regions.sh" stop || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$ROOT/scripts/regions.sh" start
eval "$(bash "$ROOT/scripts/regions.sh" env)"

# One keys file for both regions: made once (a token command makes it when it is missing), copied into
# each region's data dir, where `camflow token ... --data-dir` (the banner's) finds it too.
"$PY" -m camflow.cli token view "$STREAM" --data-dir "$TOP" >/dev/null
export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"

for r in A B; do
  http="$(setting "$r" HTTP_PORT 8080 8180)"
  kafka_var="REGION_${r}_KAFKA"; s3_var="REGION_${r}_S3"
  args=(run --kafka "${!kafka_var}" --s3 "${!s3_var}" --data-dir "$TOP/$r/camflow"
        --http-port "$http" --rtsp-port "$(setting "$r" RTSP_PORT 8554 8654)"
        --rtsp-udp-ports "$(setting "$r" UDP_PORTS 20000-20499 20500-20999)"
        --webrtc-ports "$(setting "$r" WEBRTC_PORTS 40000-40499 40500-40999)" --stream "$STREAM"
        --region "$r" --region-edge-url "http://127.0.0.1:$http")
  # shellcheck disable=SC2206  # CAMFLOW_RUN_ARGS is words by design
  args+=(${CAMFLOW_RUN_ARGS:-})
  mkdir -p "$TOP/$r/camflow"
  cp "$TOP/secret" "$TOP/$r/camflow/secret"; chmod 600 "$TOP/$r/camflow/secret"
  out="$TOP/$r/camflow.out"; err="$TOP/$r/camflow.log"
  # setsid: a session of its own, so Ctrl-C reaches this script alone, which stops it by PID (its
  # drain, then the backends); setsid execs in place here (no job control), so $! is camflow's PID.
  setsid "$PY" -m camflow.cli "${args[@]}" >"$out" 2>"$err" </dev/null &
  PIDS[$r]=$!
  echo "regions demo: region $r camflow (pid ${PIDS[$r]}): Kafka ${!kafka_var}, S3 ${!s3_var}, logs $err"
done

for r in A B; do
  out="$TOP/$r/camflow.out"
  deadline=$((SECONDS + 120))
  until grep -q "Ctrl-C stops it." "$out" 2>/dev/null; do
    if ! kill -0 "${PIDS[$r]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "regions demo: region $r's camflow did not come up; its log ($TOP/$r/camflow.log):" >&2
      tail -n 30 "$TOP/$r/camflow.log" >&2 || true
      exit 1
    fi
    sleep 0.25
  done
  echo
  echo "=== region $r ==="
  grep -v "^Ctrl-C stops it." "$out"
done
echo
echo "Both regions' stores replicate each other (MinIO site replication): scripts/regions.sh status"
echo "Ctrl-C stops both regions (camflow, Kafka, MinIO)."
# Until Ctrl-C, or until one region's camflow exits (that ends the demo: its log says why).
wait -n "${PIDS[@]}" || true
for r in A B; do
  kill -0 "${PIDS[$r]}" 2>/dev/null || echo "regions demo: region $r's camflow exited; see $TOP/$r/camflow.log" >&2
done
exit 1
