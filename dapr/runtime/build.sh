#!/usr/bin/env bash
# Builds Dapr runtime commands at the release pinned in go.mod, from the Go module proxy, with the fixes in
# patches/ applied to that release's source (each patch says what it mends):
#   build.sh [--edge] <bin folder> <command>...      (commands: daprd, placement, scheduler, sentry)
# --edge builds the trimmed daprd of edge devices: only the components listed in edge-components.txt are
# registered (the other files of cmd/daprd/components/ are deleted from the patched copy), which makes it smaller
# and lighter at idle. The patched source is kept in <bin folder>/../src. GOOS and GOARCH cross-compile. What is up
# to date is not rebuilt. Used by dapr/install.sh (the runtime of `make run` and the tests), `make edge-runtime`
# (the edge daprd) and dapr/runtime/Dockerfile (the sidecar image for Kubernetes).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
profile=full
if [[ "${1:-}" == --edge ]]; then
    profile=edge
    shift
fi
bin=$(mkdir -p "${1:?usage: build.sh [--edge] <bin folder> <command>...}" && cd "$1" && pwd)
shift
version=$(sed -n 's|^require github.com/dapr/dapr v||p' "$here/go.mod")
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
platform="$(go env GOOS)/$(go env GOARCH)"
# The edge build registers only the files it keeps, under the allcomponents tag (the SQLite name resolver has no
# other). What <command>.version records: the full build keeps the stamp it always had, so it is not rebuilt for this.
tags=stablecomponents stamp="$version $platform"
[[ "$profile" == full ]] || tags=allcomponents stamp="$version $platform $profile"

# Deletes every component registration that edge-components.txt does not list.
trim_components() {
    local file kept
    kept=$(grep -v '^#' "$here/edge-components.txt" | sed '/^$/d')
    for file in "$1"/*.go; do
        grep -qxF "$(basename "$file")" <<<"$kept" || rm "$file"
    done
    echo "runtime: the edge daprd registers $(cd "$1" && echo *.go)"
}

# The pinned release's source with patches/ applied, and a copy of go.mod that builds with it.
patched_source() {
    local work source original inputs=("$here/patches")
    [[ "$profile" == full ]] || inputs+=("$here/edge-components.txt")
    work=$(dirname "$bin")/src
    source="$work/dapr@$version"
    if [[ ! -f "$source/.patched" ||
        -n "$(find "${inputs[@]}" -newer "$source/.patched" -print -quit)" ]]; then
        original=$(cd "$here" && go mod download -json github.com/dapr/dapr |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        rm -rf "$source" && mkdir -p "$work" && cp -R "$original" "$source" && chmod -R u+w "$source"
        for patch in "$here"/patches/*.patch; do
            echo "runtime: applying $(basename "$patch")"
            (cd "$source" && git apply "$patch")
        done
        [[ "$profile" == full ]] || trim_components "$source/cmd/daprd/components"
        touch "$source/.patched"
    fi
    cp "$here/go.mod" "$here/go.sum" "$work/"
    go mod edit -replace "github.com/dapr/dapr=$source" "$work/go.mod"
    modfile="$work/go.mod"
}

for name in "$@"; do
    target="$bin/$name"
    # Up to date: built for this version, platform and profile, and newer than what it is built from (go.mod,
    # go.sum, patches, its own cmd folder, the edge component list; a command added beside it changes nothing of it).
    inputs=("$here/go.mod" "$here/go.sum" "$here/patches" "$here/cmd/$name")
    [[ "$profile" == full ]] || inputs+=("$here/edge-components.txt")
    if [[ -x "$target" && "$(cat "$target.version" 2>/dev/null)" == "$stamp" &&
        -z "$(find "${inputs[@]}" -type f -newer "$target" -print -quit)" ]]; then
        continue
    fi
    [[ -n "${modfile:-}" ]] || patched_source
    rm -f "$target" # it may be a link to a daprd from `dapr init`, which must stay as it is
    echo "runtime: building $name $version ($profile) for $platform with Go (the first build takes minutes)"
    started=$SECONDS
    (cd "$here" && go build -modfile "$modfile" -tags "$tags" -trimpath -o "$target" \
        -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$version -X github.com/dapr/kit/logger.DaprVersion=$version" \
        "./cmd/$name")
    echo "runtime: built $name in $((SECONDS - started)) s"
    echo "$stamp" >"$target.version"
done
