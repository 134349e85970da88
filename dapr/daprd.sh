#!/usr/bin/env bash
# daprd as `make run` starts it: dapr.yaml's runtimePath is a folder whose .dapr/bin/daprd is this script
# (dapr/install.sh links it). The run template binds the Dapr APIs to loopback (apiListenAddresses) but has no
# field for the listen addresses of daprd's internal gRPC server (sidecar to sidecar, which takes no API token)
# and of its metrics, which are every interface unless daprd is told otherwise: this tells it. The sidecar then
# announces that address over mDNS (DAPR_HOST_IP), so the other sidecars call it there.
#   SIDECAR_LISTEN_ADDRESS   where both listen (127.0.0.1)
set -euo pipefail
address=${SIDECAR_LISTEN_ADDRESS:-127.0.0.1}
export DAPR_HOST_IP=$address
exec "${DAPR_RUNTIME_PATH:-$HOME}/.dapr/bin/daprd" "$@" \
    --dapr-internal-grpc-listen-address "$address" --metrics-listen-address "$address"
