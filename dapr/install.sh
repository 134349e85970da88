#!/usr/bin/env bash
# Puts the Dapr runtime (daprd, placement, scheduler, sentry) and the dapr CLI, at the versions pinned in
# dapr/runtime/go.mod and dapr/cli/go.mod, into a folder that `dapr run --runtime-path` accepts:
#   <dest>/.dapr/bin/{daprd,placement,scheduler,sentry,dapr}  <dest>/.dapr/config.yaml  <dest>/.dapr/components/
# Everything is built with Go from the module proxy; the runtime by runtime/build.sh, with the fixes in
# runtime/patches applied to the pinned release, so a daprd from `dapr init` is not used.
# Nothing that is up to date is rebuilt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=$(mkdir -p "${1:?usage: install.sh <runtime folder>}" && cd "$1" && pwd)
bin="$dest/.dapr/bin"
mkdir -p "$bin" "$dest/.dapr/components"

cli_version=$(sed -n 's|^require github.com/dapr/cli v||p' "$here/cli/go.mod")
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

# True when $1 exists, was built for version $2, and is newer than every file of Go module $3.
up_to_date() {
    [[ -x "$1" && -f "$1.version" && "$(cat "$1.version")" == "$2" ]] || return 1
    [[ -z "$(find "$3" -type f -newer "$1" -print -quit)" ]]
}

"$here/runtime/build.sh" "$bin" daprd placement scheduler sentry

target="$bin/dapr"
if ! up_to_date "$target" "$cli_version" "$here/cli"; then
    echo "runtime: building the dapr CLI $cli_version with Go"
    started=$SECONDS
    (cd "$here/cli" && go build -trimpath -o "$target" -ldflags "-s -w -X main.version=$cli_version" github.com/dapr/cli)
    echo "runtime: built the dapr CLI in $((SECONDS - started)) s"
    echo "$cli_version" > "$target.version"
fi

# What dapr.yaml's runtimePath names: a runtime folder whose daprd is dapr/daprd.sh, which runs the daprd above
# with the listen addresses the run template cannot pass.
mkdir -p "$dest/sidecar/.dapr/bin"
ln -sfn "$here/daprd.sh" "$dest/sidecar/.dapr/bin/daprd"

# `dapr run` passes <runtime>/.dapr/config.yaml unless told otherwise: a minimal Configuration is enough.
[[ -f "$dest/.dapr/config.yaml" ]] || cat > "$dest/.dapr/config.yaml" <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprConfig
spec: {}
YAML
echo "runtime: $("$bin/daprd" --version | sed 's/^/daprd /'), $("$bin/dapr" --version | head -1) in $bin"
