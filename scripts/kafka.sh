#!/usr/bin/env bash
# KRaft Kafka from Maven Central, on 127.0.0.1: one node, or a cluster of KAFKA_BROKERS nodes.
#   scripts/kafka.sh install        resolve the broker's classpath into the cache (once)
#   scripts/kafka.sh start          install if needed, wipe the data, format, start every node, wait until
#                                   each logs "Kafka Server started" and accepts connections on its port
#   scripts/kafka.sh stop           stop every node started by `start` (by its PID)
#   scripts/kafka.sh status
#   scripts/kafka.sh stop-node N    stop node N alone (a broker outage; its data stays)
#   scripts/kafka.sh start-node N   start node N again on its data (after stop-node)
#   scripts/kafka.sh bootstrap      print the bootstrap servers ("127.0.0.1:P1,127.0.0.1:P2,...")
#   scripts/kafka.sh resume         start every stopped node again on its data (after stop: an outage, not a wipe)
#   scripts/kafka.sh freeze [N]     SIGSTOP every node (or node N): a hung broker, connections stay open
#   scripts/kafka.sh thaw [N]       SIGCONT them
#   scripts/kafka.sh tls-env        (KAFKA_TLS=1) print the camflow client settings for the SASL_SSL listener
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_BROKERS (1), CAMFLOW_CACHE (~/.cache/camflow),
#      CAMFLOW_RUN (.run in the repo: logs, pid, data), KAFKA_START_TIMEOUT (120 s).
# TLS: KAFKA_TLS=1 adds two listeners to every node beside PLAINTEXT: SSL with mutual TLS (a client
# certificate signed by the test CA is required) on KAFKA_TLS_PORT (KAFKA_PORT + 2 x KAFKA_BROKERS),
# and SASL_SSL with SCRAM-SHA-512 / SCRAM-SHA-256 on KAFKA_TLS_PORT + 1 (node i: both + 2(i-1)).
# The certificates (EC P-256, for 127.0.0.1 and localhost, 30 days) are made with openssl into
# $CAMFLOW_RUN/kafka/tls: ca.crt (what clients trust), broker.crt/.key, client.crt/.key (for the
# SSL listener); kept across starts while ca.crt exists. The SCRAM user KAFKA_SASL_USER (camflow)
# with KAFKA_SASL_PASSWORD (default: random, made once) is created when the storage is formatted;
# the password is kept in tls/sasl-password (mode 600). Brokers talk to each other over PLAINTEXT
# on 127.0.0.1: this is a test broker.
# With KAFKA_BROKERS=N > 1, node i (1..N) listens on KAFKA_PORT + 2(i-1), its controller on
# KAFKA_CONTROLLER_PORT + 2(i-1); every node is broker and controller (a quorum of N voters), and topics
# are replicated N ways with min.insync.replicas = N - 1 (3 brokers: RF 3, min ISR 2, the
# durability a production cluster runs with). Node i keeps its files in .run/kafka/node-i.
# The data is scratch: every `start` wipes it (tests need no persistence across runs).
set -euo pipefail
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J_VERSION="2.24.3"
CACHE="${CAMFLOW_CACHE:-$HOME/.cache/camflow}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CAMFLOW_RUN:-$ROOT/.run}"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-9093}"
BROKERS="${KAFKA_BROKERS:-1}"
LIB="$CACHE/kafka-$KAFKA_VERSION/libs"
TOP="$RUN/kafka"
TLS="${KAFKA_TLS:-0}"
TLS_DIR="$TOP/tls"
TLS_PORT="${KAFKA_TLS_PORT:-$((PORT + 2 * BROKERS))}"
SASL_USER="${KAFKA_SASL_USER:-camflow}"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

install() {
  if [ -f "$LIB/.complete" ]; then return 0; fi
  mkdir -p "$LIB"
  # One resolve at a time: a second `install` waits for the first and then finds .complete.
  exec 9>"$LIB/../.install.lock"
  if ! flock -n 9; then echo "kafka: another install is running; waiting for it"; flock 9; fi
  if [ -f "$LIB/.complete" ]; then exec 9>&-; return 0; fi
  echo "kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central"
  local work; work="$(mktemp -d)"
  cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>camflow</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  if ! mvn -B -q -f "$work/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
      org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB"; then
    rm -rf "$work"; echo "kafka: resolving the broker classpath with Maven failed" >&2; exit 1
  fi
  rm -rf "$work"
  touch "$LIB/.complete"
  exec 9>&-
}

# One node's files: the single node keeps today's layout (.run/kafka), cluster node i .run/kafka/node-i.
node_dir() { if [ "$BROKERS" = 1 ]; then echo "$TOP"; else echo "$TOP/node-$1"; fi; }
node_port() { echo $((PORT + 2 * ($1 - 1))); }
node_cport() { echo $((CPORT + 2 * ($1 - 1))); }
node_tls_port() { echo $((TLS_PORT + 2 * ($1 - 1))); }
node_sasl_port() { echo $((TLS_PORT + 2 * ($1 - 1) + 1)); }
running_node() { local d; d="$(node_dir "$1")"; pid_running "$d/kafka.pid" "$d/server.properties"; }

# Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64 without padding, not starting with '-'.
random_uuid() {
  local u
  while :; do
    u="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$u" != -* ]] && { echo "$u"; return; }
  done
}

bootstrap() {
  local i out=""
  for i in $(seq 1 "$BROKERS"); do out="${out:+$out,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}

write_config() {  # write_config NODE
  local i="$1" d voters="" j rf isr
  d="$(node_dir "$i")"
  for j in $(seq 1 "$BROKERS"); do voters="${voters:+$voters,}$j@127.0.0.1:$(node_cport "$j")"; done
  rf="$BROKERS"; isr=$((BROKERS > 1 ? BROKERS - 1 : 1))
  local listeners advertised map
  listeners="PLAINTEXT://127.0.0.1:$(node_port "$i"),CONTROLLER://127.0.0.1:$(node_cport "$i")"
  advertised="PLAINTEXT://127.0.0.1:$(node_port "$i")"
  map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ "$TLS" = 1 ]; then
    local secure="SSL://127.0.0.1:$(node_tls_port "$i"),SASL_SSL://127.0.0.1:$(node_sasl_port "$i")"
    listeners="$listeners,$secure"; advertised="$advertised,$secure"; map="$map,SSL:SSL,SASL_SSL:SASL_SSL"
  fi
  cat > "$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$map
log.dirs=$d/data
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=33554432
replica.fetch.max.bytes=33554432
log.retention.hours=24
PROPS
  if [ "$TLS" = 1 ]; then
    cat >> "$d/server.properties" <<PROPS
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
ssl.endpoint.identification.algorithm=https
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
PROPS
  fi
  cat > "$d/log4j2.properties" <<L4J
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $d/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.org.name = org.apache.kafka
logger.org.level = WARN
L4J
}

launch_node() {  # launch_node NODE: start the JVM on the node's formatted data, no waiting
  local d; d="$(node_dir "$1")"
  # Old logs would satisfy the readiness grep below immediately.
  rm -f "$d/server.log" "$d/stdout.log"
  # setsid: own session, so a Ctrl-C / hang-up on the caller's terminal does not reach the broker
  # (this script has no job control, so setsid execs in place and $! stays the broker's PID).
  setsid nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$d/log4j2.properties" \
    -cp "$LIB/*" kafka.Kafka "$d/server.properties" </dev/null >"$d/stdout.log" 2>&1 &
  echo $! > "$d/kafka.pid"
}

wait_node() {  # wait_node NODE: until it logs "Kafka Server started" and accepts connections
  local i="$1" d p; d="$(node_dir "$i")"; p="$(node_port "$i")"
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  until grep -q "Kafka Server started" "$d/server.log" 2>/dev/null && port_open "$p"; do
    if ! running_node "$i"; then
      echo "kafka: node $i exited during start-up; see $d/stdout.log and $d/server.log" >&2
      tail -n 30 "$d/stdout.log" "$d/server.log" >&2 || true
      rm -f "$d/kafka.pid"; stop >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "kafka: node $i not started within ${KAFKA_START_TIMEOUT:-120} s; stopping; see $d/server.log" >&2
      tail -n 30 "$d/server.log" >&2 || true
      stop >&2; exit 1
    fi
    sleep 0.5
  done
  echo "kafka: node $i started (pid $(cat "$d/kafka.pid")) on 127.0.0.1:$p"
}

# KAFKA_TLS=1: the CA, the broker's and a client's certificate, and the SCRAM password (made once).
tls_material() {
  tls_ca kafka "$TLS_DIR"
  if [ ! -f "$TLS_DIR/broker.pem" ]; then
    tls_leaf kafka "$TLS_DIR" broker localhost
    tls_leaf kafka "$TLS_DIR" client camflow-client
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain, in one file.
    cat "$TLS_DIR/broker.key" "$TLS_DIR/broker.crt" > "$TLS_DIR/broker.pem"; chmod 600 "$TLS_DIR/broker.pem"
  fi
  [[ "$SASL_USER" =~ ^[A-Za-z0-9._-]+$ ]] || {
    echo "kafka: KAFKA_SASL_USER must be letters, digits, '.', '_' or '-', not '$SASL_USER'" >&2; exit 2; }
  local password="${KAFKA_SASL_PASSWORD:-}"
  if [ -z "$password" ] && [ -f "$TLS_DIR/sasl-password" ]; then password="$(cat "$TLS_DIR/sasl-password")"; fi
  [ -n "$password" ] || password="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  [[ "$password" =~ ^[A-Za-z0-9._-]{8,}$ ]] || {
    echo "kafka: KAFKA_SASL_PASSWORD must be 8 or more letters, digits, '.', '_' or '-'" >&2; exit 2; }
  (umask 077; printf '%s' "$password" > "$TLS_DIR/sasl-password")
}

tls_env() {  # the settings of a camflow client of the SASL_SSL listener (the password by its file)
  [ -f "$TLS_DIR/sasl-password" ] || { echo "kafka: no TLS material in $TLS_DIR (start with KAFKA_TLS=1)" >&2; exit 1; }
  local i sasl="" ssl=""
  for i in $(seq 1 "$BROKERS"); do
    sasl="${sasl:+$sasl,}127.0.0.1:$(node_sasl_port "$i")"; ssl="${ssl:+$ssl,}127.0.0.1:$(node_tls_port "$i")"
  done
  echo "# SASL_SSL (SCRAM-SHA-512): camflow ... --kafka $sasl"
  echo "# (mutual TLS instead: --kafka $ssl, CAMFLOW_KAFKA_SECURITY_PROTOCOL=SSL,"
  echo "#  CAMFLOW_KAFKA_CERT_FILE=$TLS_DIR/client.crt CAMFLOW_KAFKA_KEY_FILE=$TLS_DIR/client.key)"
  echo "export CAMFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
  echo "export CAMFLOW_KAFKA_CA_FILE=$TLS_DIR/ca.crt"
  echo "export CAMFLOW_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
  echo "export CAMFLOW_KAFKA_USERNAME=$SASL_USER"
  echo "export CAMFLOW_KAFKA_PASSWORD_FILE=$TLS_DIR/sasl-password"
}

start() {
  install
  [[ "$BROKERS" =~ ^[1-9][0-9]*$ ]] || { echo "kafka: KAFKA_BROKERS must be a positive number, not '$BROKERS'" >&2; exit 2; }
  if running_node 1; then echo "kafka: already running (pid $(cat "$(node_dir 1)/kafka.pid")) on $(bootstrap)"; return 0; fi
  local i d ports=() uuid
  for i in $(seq 1 "$BROKERS"); do ports+=("$(node_port "$i")" "$(node_cport "$i")"); done
  if [ "$TLS" = 1 ]; then
    for i in $(seq 1 "$BROKERS"); do ports+=("$(node_tls_port "$i")" "$(node_sasl_port "$i")"); done
  fi
  ports_free kafka "KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_TLS_PORT" "${ports[@]}"
  local scram=()
  if [ "$TLS" = 1 ]; then
    tls_material
    # SCRAM credentials go into the metadata log at format time (KRaft): both hashes for the one user.
    local password; password="$(cat "$TLS_DIR/sasl-password")"
    scram=(--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$password]"
           --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$password]")
  fi
  uuid="$(random_uuid)"
  for i in $(seq 1 "$BROKERS"); do
    d="$(node_dir "$i")"
    rm -f "$d/kafka.pid"
    # Scratch state: a fresh log dir each start (no cluster-id / quorum mismatch, no stale topics).
    rm -rf "$d/data"; mkdir -p "$d/data"; rm -f "$d/format.log"
    write_config "$i"
    if ! java -cp "$LIB/*" -Dlog4j2.configurationFile="$d/log4j2.properties" kafka.tools.StorageTool \
        format -g -t "$uuid" -c "$d/server.properties" "${scram[@]}" >"$d/format.log" 2>&1; then
      echo "kafka: storage format failed; see $d/format.log" >&2; tail -n 30 "$d/format.log" >&2 || true; exit 1
    fi
  done
  # Every node first, then the waits: a quorum of N needs a majority up before any node is started.
  for i in $(seq 1 "$BROKERS"); do launch_node "$i"; done
  for i in $(seq 1 "$BROKERS"); do wait_node "$i"; done
  [ "$BROKERS" = 1 ] || echo "kafka: $BROKERS nodes running; bootstrap $(bootstrap)"
  if [ "$TLS" = 1 ]; then
    echo "kafka: TLS listeners: SSL (client certificate required) on 127.0.0.1:$(node_tls_port 1)," \
      "SASL_SSL (SCRAM user $SASL_USER) on 127.0.0.1:$(node_sasl_port 1); CA $TLS_DIR/ca.crt" \
      "(scripts/kafka.sh tls-env prints the client settings)"
  fi
}

stop_node() {  # stop_node NODE [TRIES]: SIGTERM, then SIGKILL after TRIES x 0.5 s (default 60)
  local d; d="$(node_dir "$1")"
  if ! running_node "$1"; then echo "kafka: node $1 not running"; rm -f "$d/kafka.pid"; return 0; fi
  stop_pid "kafka node $1" "$d/kafka.pid" "${2:-60}" 0.5
}

start_node() {
  local i="$1" d; d="$(node_dir "$i")"
  if running_node "$i"; then echo "kafka: node $i already running"; return 0; fi
  [ -f "$d/server.properties" ] || { echo "kafka: node $i was never started (run start first)" >&2; exit 1; }
  ports_free kafka "KAFKA_PORT / KAFKA_CONTROLLER_PORT" "$(node_port "$i")" "$(node_cport "$i")"
  launch_node "$i"; wait_node "$i"
}

resume() {  # every stopped node on its data: all launched first (a quorum needs a majority), then waited for
  local i launched=()
  for i in $(seq 1 "$BROKERS"); do
    running_node "$i" && continue
    [ -f "$(node_dir "$i")/server.properties" ] || { echo "kafka: node $i was never started (run start first)" >&2; exit 1; }
    ports_free kafka "KAFKA_PORT / KAFKA_CONTROLLER_PORT" "$(node_port "$i")" "$(node_cport "$i")"
    launch_node "$i"; launched+=("$i")
  done
  for i in "${launched[@]}"; do wait_node "$i"; done
  [ "${#launched[@]}" -gt 0 ] || echo "kafka: every node is running"
}

signal_nodes() {  # signal_nodes SIGNAL WHAT [NODE]: SIGSTOP / SIGCONT one running node or all
  local sig="$1" what="$2" i nodes
  if [ -n "${3:-}" ]; then node_arg "$3"; nodes="$3"; else nodes="$(seq 1 "$BROKERS")"; fi
  for i in $nodes; do
    if running_node "$i"; then kill "-$sig" "$(cat "$(node_dir "$i")/kafka.pid")"; echo "kafka: node $i $what"
    else echo "kafka: node $i not running" >&2; exit 1; fi
  done
}

stop() {
  local i status=0
  # SIGTERM to every node first: a node waiting for a quorum that its peers already left would
  # otherwise sit out its whole shutdown wait.
  for i in $(seq 1 "$BROKERS"); do
    running_node "$i" && kill "$(cat "$(node_dir "$i")/kafka.pid")" 2>/dev/null || true
  done
  # The last nodes of a cluster that is going away wait for a controller quorum that is gone: their
  # data is scratch, so they get 10 s before SIGKILL (a single node gets its full 30 s).
  for i in $(seq 1 "$BROKERS"); do stop_node "$i" "$([ "$BROKERS" = 1 ] && echo 60 || echo 20)" || status=1; done
  return $status
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$BROKERS" ] || {
    echo "kafka: node must be 1..$BROKERS (KAFKA_BROKERS), not '${1:-}'" >&2; exit 2; }
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  stop-node) node_arg "${2:-}"; stop_node "$2" ;;
  start-node) node_arg "${2:-}"; start_node "$2" ;;
  bootstrap) bootstrap ;;
  tls-env) tls_env ;;
  resume) resume ;;
  freeze) signal_nodes STOP frozen "${2:-}" ;;
  thaw) signal_nodes CONT thawed "${2:-}" ;;
  status)
    up=0
    for i in $(seq 1 "$BROKERS"); do
      if running_node "$i"; then echo "kafka: node $i running (pid $(cat "$(node_dir "$i")/kafka.pid"))"; up=$((up + 1))
      else echo "kafka: node $i stopped"; fi
    done
    [ "$up" -gt 0 ] ;;
  *) echo "usage: $0 install|start|stop|status|stop-node N|start-node N|resume|freeze [N]|thaw [N]|bootstrap|tls-env" >&2; exit 2 ;;
esac
