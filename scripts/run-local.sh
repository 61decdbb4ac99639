#!/usr/bin/env bash
# run-local.sh: start one real Kafka broker on 127.0.0.1 and `kmigrate proxy`
# in front of it. Clients then use bootstrap.servers=127.0.0.1:19092.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN=${LISTEN:-127.0.0.1:19092}
ADMIN=${ADMIN:-127.0.0.1:19644}
mkdir -p bin
go build -o bin/kmigrate ./cmd/kmigrate
go build -o bin/kafka-local ./internal/kafkatest/cmd/kafka-local
addr_file=$(mktemp)
rm -f "$addr_file"
bin/kafka-local -addr-file "$addr_file" &
kafka_pid=$!
trap 'kill $kafka_pid 2>/dev/null; wait $kafka_pid 2>/dev/null; rm -f "$addr_file"' EXIT
for _ in $(seq 1 240); do
  [ -s "$addr_file" ] && break
  kill -0 $kafka_pid 2>/dev/null || { echo "run-local: Kafka failed to start" >&2; exit 1; }
  sleep 0.5
done
[ -s "$addr_file" ] || { echo "run-local: Kafka did not come up within 120 s" >&2; exit 1; }
echo "kmigrate proxy: clients use bootstrap.servers=$LISTEN (metrics on http://$ADMIN/metrics)"
bin/kmigrate proxy --source-bootstrap "$(cat "$addr_file")" --listen "$LISTEN" --admin-listen "$ADMIN"
