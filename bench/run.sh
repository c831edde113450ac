#!/usr/bin/env bash
# `make bench`: installs the peers (oneTBB and GLib from Debian; Ray and numpy into
# bench/.venv from PyPI), then runs bench/run.py. Pass --quick for the short mode.
set -euo pipefail
cd "$(dirname "$0")/.."
FORKLIFT_BENCH=1 bash scripts/setup
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
if ! bench/.venv/bin/python -c "import ray" 2>/dev/null; then
    echo "bench: installing Ray into bench/.venv (once)"
    bench/.venv/bin/pip install -q ray numpy || echo "bench: Ray could not be installed; its rows will say so"
fi
exec python3 bench/run.py "$@"
