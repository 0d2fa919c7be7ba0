#!/usr/bin/env bash
# Installs the pinned bentoml client into a cached virtualenv (once per machine) and prints the
# path of its python. The tests call this; so may you: `tests/bentoml/venv.sh [VERSION]`.
# VERSION defaults to 1.4.40; the console's login test also uses 1.4.10 (the older, loopback
# callback browser login). pexpect comes along, to drive `bentoml cloud login` in a terminal.
# Cache: $BENTOGATE_BENTOML_VENV (default version only), else
# ${XDG_CACHE_HOME:-~/.cache}/bentogate/bentoml-$VERSION.
set -euo pipefail
VERSION=${1:-1.4.40}
if [ "$VERSION" = 1.4.40 ]; then
    VENV=${BENTOGATE_BENTOML_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/bentogate/bentoml-$VERSION}
else
    VENV=${XDG_CACHE_HOME:-$HOME/.cache}/bentogate/bentoml-$VERSION
fi
mkdir -p "$(dirname "$VENV")"
# Test binaries run in parallel: one installs, the others wait for it.
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/python" -c "import bentoml, pexpect, sys; sys.exit(bentoml.__version__ != '$VERSION')" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --disable-pip-version-check -q "bentoml==$VERSION" "pexpect==4.9.0" >&2
fi
echo "$VENV/bin/python"
