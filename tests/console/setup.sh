#!/usr/bin/env bash
# Installs what the console's browser tests need, once per machine, and prints the path of
# axe-core's axe.min.js: Debian's chromium and chromium-driver (if missing), and axe-core from npm
# into ${XDG_CACHE_HOME:-~/.cache}/bentogate/npm. The tests call this; so may you.
set -euo pipefail
AXE_VERSION=4.10.3
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/bentogate
mkdir -p "$CACHE"
# Test binaries run in parallel: one installs, the others wait for it.
exec 9>"$CACHE/browser.lock"
flock 9
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium and chromium-driver from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium chromium-driver >&2
fi
AXE=$CACHE/npm/node_modules/axe-core/axe.min.js
if ! grep -q "axe v$AXE_VERSION" "$AXE" 2>/dev/null; then
    mkdir -p "$CACHE/npm"
    (cd "$CACHE/npm" && npm install --silent --no-audit --no-fund --prefix . "axe-core@$AXE_VERSION" >&2)
fi
echo "$AXE"
