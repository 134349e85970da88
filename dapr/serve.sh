#!/usr/bin/env bash
# `make serve-models`: `tandem serve` of a repository of your own beside its sidecar, the way `make run` runs its
# apps (Dapr APIs, internal gRPC and metrics on loopback; mTLS with the certificates of the stack's Sentry), so the
# stack's gateway can route to it. Start `make run` first.
#   dapr/serve.sh <app id> <repository> [app port]
set -euo pipefail
usage="usage: dapr/serve.sh <app id> <repository> [app port]"
app_id=${1:?$usage}
repository=$(cd "${2:?$usage}" && pwd)
port=${3:-8080}
root=$(cd "$(dirname "$0")/.." && pwd)
anchors="$root/.data/sentry/ca.crt"
[[ -s "$anchors" ]] || { echo "no $anchors: start the stack first (make run), whose Sentry makes it" >&2; exit 1; }
DAPR_TRUST_ANCHORS=$(cat "$anchors")
export DAPR_TRUST_ANCHORS
unset NAMESPACE  # local sidecars live in Dapr's default namespace, as make run's do
export DAPR_RUNTIME_PATH=${DAPR_RUNTIME_PATH:-$root/.runtime} PATH="$root/.venv/bin:$root/.runtime/.dapr/bin:$PATH"
exec dapr run --app-id "$app_id" --app-port "$port" --runtime-path "$root/.runtime/sidecar" \
    --dapr-listen-addresses 127.0.0.1 --resources-path "$root/components" --config "$root/dapr/config.yaml" \
    --enable-app-health-check --app-health-check-path /v2/health/live \
    --placement-host-address "" --scheduler-host-address " " \
    -- tandem serve "$repository" --port "$port"
