#!/usr/bin/env bash
# The Apache Kafka leg: start a real Apache Kafka broker (KRaft), run every test that uses the
# real servers against it (PostgreSQL, Redis and SMTP still come from the test session), and stop
# the broker whatever happened. Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${APACHE_KAFKA_PORT:-29092}"

bash "$here/kafka.sh" up
trap 'bash "$here/kafka.sh" down' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$repo"
export KAFKA_BOOTSTRAP_SERVERS="localhost:$port"
export KAFKA_ENABLE_IDEMPOTENCE=true   # Apache Kafka supports it (Tansu does not)
echo "apache-kafka: running the tests that use the real servers against $KAFKA_BOOTSTRAP_SERVERS"
.venv/bin/python -m pytest --servers-only "$@"
