#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft) from the official Maven Central artifacts.
#
#   deploy/apache-kafka/kafka.sh up      fetch the jars (once), format storage, start, wait
#   deploy/apache-kafka/kafka.sh down    stop it (SIGTERM, then SIGKILL after 30 s)
#   deploy/apache-kafka/kafka.sh status
#
# Settings: APACHE_KAFKA_PORT (default 29092; the controller listens on the next port),
# APACHE_KAFKA_HEAP (default 384m). Everything lives in .data/apache-kafka/ (git-ignored):
# lib/ (jars), data/ (log dirs, wiped at each `up`), kafka.log, kafka.pid.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="$repo/.data/apache-kafka"
lib="${APACHE_KAFKA_LIB:-$home/lib}"
port="${APACHE_KAFKA_PORT:-29092}"
controller_port="$((port + 1))"
heap="${APACHE_KAFKA_HEAP:-384m}"
pidfile="$home/kafka.pid"
log="$home/kafka.log"

say() { echo "apache-kafka: $*" >&2; }

elapsed() {  # seconds since $1 (an $EPOCHREALTIME), to the tenth
    local now=${EPOCHREALTIME/[.,]/} then=${1/[.,]/}
    local tenths=$(((now - then) / 100000))
    echo "$((tenths / 10)).$((tenths % 10))"
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
        && grep -q 'kafka.Kafka' "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_tools() {
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            say "installing Java and Maven from Debian's packages ..."
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                default-jre-headless maven >/dev/null
        else
            say "Java 11+ and Maven are needed (Debian: sudo apt-get install default-jre-headless maven)"
            exit 1
        fi
    fi
}

fetch() {
    # Fetched once per version of pom.xml: a changed pom fetches afresh.
    ensure_tools
    local stamp
    stamp="$(cksum <"$here/pom.xml")"
    if [[ -f "$lib/.pom-stamp" && "$(cat "$lib/.pom-stamp")" == "$stamp" ]]; then
        return
    fi
    rm -rf "$lib"
    say "fetching org.apache.kafka:kafka_2.13 and its dependencies from Maven Central ..."
    local started=$SECONDS
    mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib"
    echo "$stamp" >"$lib/.pom-stamp"
    say "fetched $(ls "$lib" | wc -l) jars in $((SECONDS - started)) s"
}

up() {
    if running; then
        say "already running (pid $(cat "$pidfile")) on localhost:$port"
        return
    fi
    for p in "$port" "$controller_port"; do
        if port_open "$p"; then
            say "port $p is already in use; set APACHE_KAFKA_PORT to another port"
            exit 1
        fi
    done
    fetch
    ensure_tools
    local cp="$lib/*"
    local data="$home/data"
    rm -rf "$data"
    mkdir -p "$data"
    sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@LOG_DIR@|$data|g" \
        "$here/server.properties" >"$home/server.properties"
    local started=$EPOCHREALTIME
    local cluster_id
    cluster_id="$(java -cp "$cp" -Dlog4j.configuration="file:$here/log4j.properties" \
        kafka.tools.StorageTool random-uuid)"
    java -cp "$cp" -Dlog4j.configuration="file:$here/log4j.properties" kafka.tools.StorageTool \
        format --standalone -t "$cluster_id" -c "$home/server.properties" >/dev/null
    : >"$log"
    # Its own session (setsid) so that `down` can stop it whoever started it.
    setsid java "-Xmx$heap" "-Xms$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dlog4j.configuration="file:$here/log4j.properties" \
        -cp "$cp" kafka.Kafka "$home/server.properties" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + 120))
    until grep -q 'Kafka Server started' "$log" && port_open "$port"; do
        if ! running; then
            tail -n 40 "$log" >&2
            say "the broker exited while starting (log: $log)"
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS > deadline)); then
            tail -n 40 "$log" >&2
            say "the broker did not start within 120 s (log: $log)"
            down
            exit 1
        fi
        sleep 0.2
    done
    say "ready on localhost:$port (pid $(cat "$pidfile")) in $(elapsed "$started") s"
}

down() {
    if ! running; then
        rm -f "$pidfile"
        return
    fi
    local pid
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            say "still running after 30 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    say "stopped"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    fetch) fetch ;;
    status) if running; then echo "running (pid $(cat "$pidfile")) on localhost:$port"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 up|down|fetch|status" >&2; exit 2 ;;
esac
