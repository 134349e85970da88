#!/usr/bin/env bash
# `make bench` setup, idempotent: the load generator and one virtual environment per peer model server,
# all under .bench/ (git-ignored), never in the project's .venv.
#   bench/setup.sh [hey|plot|kserve|mlserver|bentoml ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
HEY_VERSION=v0.1.4
# Each peer runs the models as bench/workloads.py does, with the project's onnxruntime and tokenizers.
MODELS="onnxruntime==1.31.1 tokenizers==0.23.3"
declare -A VENV=(
    [kserve]="kserve==0.21.0 $MODELS"
    # uvloop 0.22 and newer crash MLServer's inference workers.
    [mlserver]="mlserver==1.7.1 uvloop<0.22 $MODELS"
    # 1.4.40 needs certifi>=2026.10.19, which the package index did not offer when this was pinned.
    [bentoml]="bentoml==1.4.39 $MODELS"
    [plot]="matplotlib==3.11.2"
)

install_hey() {
    [ -x .bench/bin/hey ] && return
    mkdir -p .bench/bin
    GOBIN="$PWD/.bench/bin" go install "github.com/rakyll/hey@$HEY_VERSION"
}

install_venv() {
    local name=$1 venv=.bench/venvs/$1
    local wanted=${VENV[$name]}
    # The marker holds what was installed: a changed pin reinstalls.
    [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$wanted" ] && return
    echo "bench: creating $venv ($wanted)"
    test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    # shellcheck disable=SC2086  # the pins are words
    "$venv/bin/pip" install --quiet $wanted
    echo "$wanted" > "$venv/.installed"
}

for name in ${*:-hey plot kserve mlserver bentoml}; do
    if [ "$name" = hey ]; then install_hey; else install_venv "$name"; fi
done
