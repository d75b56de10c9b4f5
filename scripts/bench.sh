#!/usr/bin/env bash
# Install what the benchmark needs (as root, Debian/Ubuntu) and run it: our plugins next to
# Debian's Go ptp + host-local. Writes bench/results/results.md and results.json.
# Arguments go to bench/run.py, e.g. scripts/bench.sh --pods 50 --bursts 50,100
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-deps.sh" --test
cd "$here"
exec "$here/.venv/bin/python" -m bench.run "$@"
