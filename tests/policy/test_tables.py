"""calico-node's tables against tampering, with real traffic (issue 18, tests/policy_harness.py):
the periodic check (node/rules.py PERIOD, 5 s) finds a flushed endpoint chain or a deleted table and
writes the table whole again, so a Deny that tampering opened closes again by itself; other tables
are never touched. Each test runs for both of the daemon's tables (ip and ip6), tampering with one
and probing over its family."""

from __future__ import annotations

import pytest

from tests.policy_harness import Scope, tcp, wait_enforced

DENY_443 = {
    "selector": "app == 'tb'",
    "types": ["Ingress"],
    "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}, {"action": "Allow"}],
}
# PERIOD plus a pass and the probes' own time: the repair must come by then.
REPAIRED_WITHIN = 15.0
FAMILIES = pytest.mark.parametrize("family", ["ip", "ip6"])


@FAMILIES
def test_a_flushed_endpoint_chain_is_written_again(pn: Scope, family: str):
    v6 = family == "ip6"
    a, b = pn.pod({"app": "ta"}, v6=v6), pn.pod({"app": "tb"}, v6=v6)
    pn.policy("tables-deny-443", DENY_443)
    wait_enforced(lambda: tcp(a, b, 443, v6), False, f"TCP a -> b:443 under Deny ({family})")
    # Someone flushes b's ingress chain: with it empty the packet returns to the forward chain,
    # whose policy accepts, so the Deny is open...
    pn.pn.nft("flush", "chain", family, "calico", f"tw-{b.interface}")
    wait_enforced(lambda: tcp(a, b, 443, v6), True, f"TCP a -> b:443 with b's {family} chain flushed", hold=0)
    # ...until the periodic check writes the table again.
    wait_enforced(lambda: tcp(a, b, 443, v6), False, f"TCP a -> b:443 once the {family} table is repaired", timeout=REPAIRED_WITHIN)
    assert tcp(a, b, 80, v6)


@FAMILIES
def test_a_deleted_table_comes_back_and_other_tables_are_left_alone(pn: Scope, tmp_path, family: str):
    v6 = family == "ip6"
    a, b = pn.pod({"app": "ta"}, v6=v6), pn.pod({"app": "tb"}, v6=v6)
    pn.policy("tables-deny-443", DENY_443)
    wait_enforced(lambda: tcp(a, b, 443, v6), False, f"TCP a -> b:443 under Deny ({family})")
    bystander = tmp_path / "bystander.nft"
    bystander.write_text("table inet bystander {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t\tcounter\n\t}\n}\n")
    pn.pn.nft("-f", str(bystander))
    try:
        pn.pn.nft("delete", "table", family, "calico")
        wait_enforced(lambda: tcp(a, b, 443, v6), False, f"TCP a -> b:443 once the {family} table is back", timeout=REPAIRED_WITHIN)
        assert f"tw-{b.interface}" in pn.pn.chains(family)
        assert tcp(a, b, 80, v6), f"TCP a -> b:80 once the {family} table is back"
        assert "chain c" in pn.pn.nft("list", "table", "inet", "bystander").stdout
    finally:
        pn.pn.nft("delete", "table", "inet", "bystander", check=False)
