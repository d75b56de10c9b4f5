#!/usr/bin/env bash
# Install everything the tests need (as root, on Debian/Ubuntu) and run the test suite.
# Extra arguments go to pytest, e.g. scripts/run-tests.sh -k ipam -x
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-deps.sh" --test
cd "$here"
exec "$here/.venv/bin/python" -m pytest "$@"
