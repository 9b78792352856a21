#!/usr/bin/env bash
# Single-node KRaft Kafka from Maven Central, on 127.0.0.1.
#   scripts/kafka.sh install   resolve the broker's classpath into the cache (once)
#   scripts/kafka.sh start     install if needed, wipe .run/kafka/data, format, start, wait until it
#                              logs "Kafka Server started" and accepts connections on KAFKA_PORT
#   scripts/kafka.sh stop      stop the broker started by `start` (by its PID)
#   scripts/kafka.sh status
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), CAMFLOW_CACHE (~/.cache/camflow),
#      CAMFLOW_RUN (.run in the repo: logs, pid, data), KAFKA_START_TIMEOUT (120 s).
# The data dir is scratch: every start wipes it (tests need no persistence across runs).
set -euo pipefail
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J_VERSION="2.24.3"
CACHE="${CAMFLOW_CACHE:-$HOME/.cache/camflow}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${CAMFLOW_RUN:-$ROOT/.run}"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-9093}"
LIB="$CACHE/kafka-$KAFKA_VERSION/libs"
DIR="$RUN/kafka"
PIDFILE="$DIR/kafka.pid"
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

running() { pid_running "$PIDFILE" "$DIR/server.properties"; }

# Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64 without padding, not starting with '-'.
random_uuid() {
  local u
  while :; do
    u="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$u" != -* ]] && { echo "$u"; return; }
  done
}

start() {
  install
  if running; then echo "kafka: already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  rm -f "$PIDFILE"
  ports_free kafka "KAFKA_PORT / KAFKA_CONTROLLER_PORT" "$PORT" "$CPORT"
  # Scratch state: a fresh log dir each start (no cluster-id / quorum mismatch, no stale topics).
  rm -rf "$DIR/data"
  mkdir -p "$DIR/data"
  # Old logs would satisfy the readiness grep below immediately.
  rm -f "$DIR/server.log" "$DIR/stdout.log" "$DIR/format.log"
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=33554432
replica.fetch.max.bytes=33554432
log.retention.hours=24
PROPS
  cat > "$DIR/log4j2.properties" <<L4J
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.org.name = org.apache.kafka
logger.org.level = WARN
L4J
  local uuid; uuid="$(random_uuid)"
  if ! java -cp "$LIB/*" -Dlog4j2.configurationFile="$DIR/log4j2.properties" kafka.tools.StorageTool \
      format -g -t "$uuid" -c "$DIR/server.properties" >"$DIR/format.log" 2>&1; then
    echo "kafka: storage format failed; see $DIR/format.log" >&2; tail -n 30 "$DIR/format.log" >&2 || true; exit 1
  fi
  # setsid: own session, so a Ctrl-C / hang-up on the caller's terminal does not reach the broker
  # (this script has no job control, so setsid execs in place and $! stays the broker's PID).
  setsid nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" </dev/null >"$DIR/stdout.log" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  until grep -q "Kafka Server started" "$DIR/server.log" 2>/dev/null && port_open "$PORT"; do
    if ! running; then
      echo "kafka: exited during start-up; see $DIR/stdout.log and $DIR/server.log" >&2
      tail -n 30 "$DIR/stdout.log" "$DIR/server.log" >&2 || true
      rm -f "$PIDFILE"; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "kafka: not started within ${KAFKA_START_TIMEOUT:-120} s; stopping it; see $DIR/server.log" >&2
      tail -n 30 "$DIR/server.log" >&2 || true
      stop >&2; exit 1
    fi
    sleep 0.5
  done
  echo "kafka: started (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
}

stop() {
  if ! running; then echo "kafka: not running"; rm -f "$PIDFILE"; return 0; fi
  stop_pid kafka "$PIDFILE" 60 0.5
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka: running (pid $(cat "$PIDFILE"))"; else echo "kafka: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
