#!/usr/bin/env bash
# Install everything the tests need (as root, on Debian/Ubuntu) and run the test suite twice:
# first with every plugin doing its work in-process, then again for the tests that exec plugins,
# with every request handed to a calico-cni-agent (CALICO_TEST_VIA_AGENT=1, see tests/conftest.py):
# both paths must give the same results and the same datastore state.
# Extra arguments go to pytest, e.g. scripts/run-tests.sh -k ipam -x. With a path or -k among them,
# only the first pass runs; CALICO_TEST_VIA_AGENT=1 scripts/run-tests.sh ... runs it via the agent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-deps.sh" --test
cd "$here"
python="$here/.venv/bin/python"

# The tests that exec the plugins (the rest test pure code or calicoctl, the same either way).
via_agent=(
    tests/test_ipam_plugin.py tests/test_calico_dataplane.py tests/test_calico_delegation.py
    tests/test_calico_lifecycle.py tests/test_calico_logging.py tests/test_calico_rollback.py
    tests/test_calico_traffic.py tests/test_gc_status.py tests/test_journal.py tests/test_crash.py
    tests/test_chaos.py tests/test_protocol.py tests/test_security_etcd.py tests/test_security_cluster.py
    tests/test_security_calico_netns.py tests/test_agent.py
    tests/integration/test_calico_clients.py tests/integration/test_reference_clients.py
)
selects=0
for arg in "$@"; do
    case "$arg" in tests*|-k|-k*|*::*) selects=1 ;; esac
done
if [ "$selects" = 1 ] || [ -n "${CALICO_TEST_VIA_AGENT:-}" ]; then
    exec "$python" -m pytest "$@"
fi
echo "== pass 1 of 2: plugins in-process (the whole suite)"
"$python" -m pytest "$@"
echo "== pass 2 of 2: every plugin request through calico-cni-agent"
CALICO_TEST_VIA_AGENT=1 exec "$python" -m pytest "$@" "${via_agent[@]}"
