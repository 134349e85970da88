#!/usr/bin/env bash
# Builds Dapr runtime commands at the release pinned in go.mod, from the Go module proxy, with the fixes in
# patches/ applied to that release's source (each patch says what it mends):
#   build.sh <bin folder> <command>...      (commands: daprd, placement, scheduler, sentry)
# The patched source is kept in <bin folder>/../src. GOOS and GOARCH cross-compile. What is up to date is not
# rebuilt. Used by dapr/install.sh (the runtime of `make run` and the tests) and dapr/runtime/Dockerfile (the
# sidecar image for Kubernetes).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=$(mkdir -p "${1:?usage: build.sh <bin folder> <command>...}" && cd "$1" && pwd)
shift
version=$(sed -n 's|^require github.com/dapr/dapr v||p' "$here/go.mod")
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
platform="$(go env GOOS)/$(go env GOARCH)"

# The pinned release's source with patches/ applied, and a copy of go.mod that builds with it.
patched_source() {
    local work source original
    work=$(dirname "$bin")/src
    source="$work/dapr@$version"
    if [[ ! -f "$source/.patched" || -n "$(find "$here/patches" -newer "$source/.patched" -print -quit)" ]]; then
        original=$(cd "$here" && go mod download -json github.com/dapr/dapr |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        rm -rf "$source" && mkdir -p "$work" && cp -R "$original" "$source" && chmod -R u+w "$source"
        for patch in "$here"/patches/*.patch; do
            echo "runtime: applying $(basename "$patch")"
            (cd "$source" && git apply "$patch")
        done
        touch "$source/.patched"
    fi
    cp "$here/go.mod" "$here/go.sum" "$work/"
    go mod edit -replace "github.com/dapr/dapr=$source" "$work/go.mod"
    modfile="$work/go.mod"
}

for name in "$@"; do
    target="$bin/$name"
    # Up to date: built for this version and platform, and newer than what it is built from (go.mod, go.sum,
    # patches, its own cmd folder; a command added beside it changes nothing of it).
    if [[ -x "$target" && "$(cat "$target.version" 2>/dev/null)" == "$version $platform" &&
        -z "$(find "$here/go.mod" "$here/go.sum" "$here/patches" "$here/cmd/$name" -type f -newer "$target" -print -quit)" ]]; then
        continue
    fi
    [[ -n "${modfile:-}" ]] || patched_source
    rm -f "$target" # it may be a link to a daprd from `dapr init`, which must stay as it is
    echo "runtime: building $name $version for $platform with Go (the first build takes minutes)"
    started=$SECONDS
    (cd "$here" && go build -modfile "$modfile" -tags stablecomponents -trimpath -o "$target" \
        -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$version -X github.com/dapr/kit/logger.DaprVersion=$version" \
        "./cmd/$name")
    echo "runtime: built $name in $((SECONDS - started)) s"
    echo "$version $platform" >"$target.version"
done
