#!/usr/bin/env bash
# Install everything the tests need (as root, on Debian/Ubuntu), check the import floors and the lint
# gate, and run the test suite twice:
# first with every plugin doing its work in-process, then the test modules marked `execs_plugins`
# again with every request handed to a calico-cni-agent (CALICO_TEST_VIA_AGENT=1, see
# tests/conftest.py): both paths must give the same results and the same datastore state.
# Extra arguments go to both passes' pytest, e.g. scripts/run-tests.sh -k ipam -x.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-deps.sh" --test
cd "$here"
python="$here/.venv/bin/python"

echo "== the floors (docs/architecture.md): lint-imports, then ruff"
"$here/.venv/bin/lint-imports" --no-cache
"$here/.venv/bin/ruff" check --no-cache .
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
    echo "== the pure tests (tests/unit) as an unprivileged user: no root, etcd or namespace needed"
    nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp)
    # A checkout inside a private directory (mktemp -d is 0700) cannot be read by another user.
    if "${nobody[@]}" test -r "$here/tests/unit/test_architecture.py" -a -x "$python"; then
        "${nobody[@]}" "$python" -m pytest -q -p no:cacheprovider tests/unit
    else
        echo "(skipped: an unprivileged user cannot read $here; tests/unit runs as root in pass 1)"
    fi
fi

echo "== pass 1 of 2: plugins in-process"
"$python" -m pytest "$@"
echo "== pass 2 of 2: every plugin request through calico-cni-agent"
rc=0
CALICO_TEST_VIA_AGENT=1 "$python" -m pytest "$@" || rc=$?
# 5: pytest collected nothing, i.e. the selection has no test that execs plugins.
[ "$rc" -ne 5 ] || { echo "(no test of this selection execs plugins)"; rc=0; }
exit "$rc"
