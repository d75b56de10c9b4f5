"""calico-node's tables against tampering, with real traffic (issue 18, tests/policy_harness.py):
the periodic check (node/rules.py PERIOD, 5 s) finds a flushed endpoint chain or a deleted table and
writes the table whole again, so a Deny that tampering opened closes again by itself; other tables
are never touched."""

from __future__ import annotations

from tests.policy_harness import Scope, tcp, wait_enforced

DENY_443 = {"selector": "app == 'tb'", "types": ["Ingress"], "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}, {"action": "Allow"}]}
# PERIOD plus a pass and the probes' own time: the repair must come by then.
REPAIRED_WITHIN = 15.0


def test_a_flushed_endpoint_chain_is_written_again(pn: Scope):
    a, b = pn.pod({"app": "ta"}, v6=False), pn.pod({"app": "tb"}, v6=False)
    pn.policy("tables-deny-443", DENY_443)
    wait_enforced(lambda: tcp(a, b, 443), False, "TCP a -> b:443 under Deny")
    # Someone flushes b's ingress chain: with it empty the packet returns to the forward chain,
    # whose policy accepts, so the Deny is open...
    pn.pn.nft("flush", "chain", "ip", "calico", f"tw-{b.interface}")
    wait_enforced(lambda: tcp(a, b, 443), True, "TCP a -> b:443 with b's chain flushed", hold=0)
    # ...until the periodic check writes the table again.
    wait_enforced(lambda: tcp(a, b, 443), False, "TCP a -> b:443 once the table is repaired", timeout=REPAIRED_WITHIN)
    assert tcp(a, b, 80)


def test_a_deleted_table_comes_back_and_other_tables_are_left_alone(pn: Scope, tmp_path):
    a, b = pn.pod({"app": "ta"}, v6=False), pn.pod({"app": "tb"}, v6=False)
    pn.policy("tables-deny-443", DENY_443)
    wait_enforced(lambda: tcp(a, b, 443), False, "TCP a -> b:443 under Deny")
    bystander = tmp_path / "bystander.nft"
    bystander.write_text("table inet bystander {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t\tcounter\n\t}\n}\n")
    pn.pn.nft("-f", str(bystander))
    try:
        pn.pn.nft("delete", "table", "ip", "calico")
        wait_enforced(lambda: tcp(a, b, 443), False, "TCP a -> b:443 once the table is back", timeout=REPAIRED_WITHIN)
        assert f"tw-{b.interface}" in pn.pn.chains("ip")
        assert "chain c" in pn.pn.nft("list", "table", "inet", "bystander").stdout
    finally:
        pn.pn.nft("delete", "table", "inet", "bystander", check=False)
