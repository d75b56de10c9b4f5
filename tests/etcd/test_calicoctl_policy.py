"""Issue 18 through calicoctl against a real etcd: the warnings apply/create/replace print for what is
stored but not enforced here, the hostile policies refused (selectors that do not parse, ports out of
range, more rules than MAX_RULES_PER_DIRECTION), and `calicoctl node policy`, the per-endpoint view
of what is enforced (tiers, policies, end-of-tier actions, profiles, labels, chains)."""

from __future__ import annotations

import json

import pytest
import yaml

from calico_cni.datastore.etcd import Range
from calico_cni.model.kinds.policy import unenforced_notes
from calico_cni.model.kinds.policy_rules import MAX_RULES_PER_DIRECTION

R = "/calico/resources/v3/projectcalico.org/"
IFACE = "cali0123456789a"


def write(tmp_path, *docs: dict) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "projectcalico.org/v3", **d} for d in docs]))
    return str(path)


def ok(r):
    assert r.rc == 0, (r.stdout, r.stderr)
    return r


def failed(r, *needles: str, code: int = 1) -> str:
    assert r.rc == code, (r.rc, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in err, err
    return err


def keys(store, prefix: str = "/calico/") -> list[str]:
    (kvs,), _ = store.client.read([Range(prefix, prefix=True, keys_only=True)])
    return [kv.key for kv in kvs]


def gnp(name: str, spec: dict) -> dict:
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(name: str, spec: dict, namespace: str = "default") -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def tier(name: str, order: float, action: str = "Deny") -> dict:
    return {"kind": "Tier", "metadata": {"name": name}, "spec": {"order": order, "defaultAction": action}}


def wep(name: str = "node1-cni-c1-eth0", namespace: str = "default", labels: dict | None = None, profiles=("net1",), iface: str = IFACE, nets=None) -> dict:
    return {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "node": "node1",
            "orchestrator": "cni",
            "containerID": name.split("-")[2],
            "endpoint": "eth0",
            "interfaceName": iface,
            "ipNetworks": ["198.18.0.5/32", "fd00:198:18::5/128"] if nets is None else nets,
            "profiles": list(profiles),
        },
    }


# -- warnings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["create", "apply", "replace"])
def test_unenforced_fields_warn_naming_resource_and_fields_and_are_stored(ctl, store, tmp_path, verb):
    docs = [
        gnp("untracked", {"selector": "all()", "doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Allow"}]}),
        np(
            "web",
            {"selector": "all()", "serviceAccountSelector": "role == 'x'", "ingress": [{"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}]},
        ),
        {
            "kind": "Profile",
            "metadata": {"name": "p1"},
            "spec": {"egress": [{"action": "Allow", "destination": {"services": {"name": "db", "namespace": "prod"}}}]},
        },
        {"kind": "HostEndpoint", "metadata": {"name": "h1"}, "spec": {"node": "node1", "interfaceName": "eth0"}},
        gnp("plain", {"selector": "all()", "ingress": [{"action": "Allow"}]}),
    ]
    path = write(tmp_path, *docs)
    if verb == "replace":
        ok(ctl("create", "-f", path))
    r = ok(ctl(verb, "-f", path))
    done = {"create": "created", "apply": "applied", "replace": "replaced"}[verb]
    assert r.stdout.strip() == f"Successfully {done} 5 resource(s)"
    # (replace of what create just wrote also says "5 unchanged"; the warnings are the same)
    assert [line for line in r.stderr.splitlines() if not line.startswith("(")] == [
        "Warning: GlobalNetworkPolicy untracked: spec.doNotTrack, spec.applyOnForward: stored but not enforced by this node daemon",
        "Warning: NetworkPolicy default/web: spec.serviceAccountSelector: matched on service-account labels (projectcalico.org/serviceaccount, pcsa.*),"
        " which endpoints here carry only when labelled by hand; spec.ingress[0].http: stored but not enforced by this node daemon",
        "Warning: Profile p1: spec.egress[0].destination.services: matches nothing here (no Kubernetes Services)",
        "Warning: HostEndpoint h1: stored but not enforced by this node daemon (only workload endpoints are policed)",
    ]
    for key in (
        "globalnetworkpolicies/default.untracked",
        "networkpolicies/default/default.web",
        "profiles/p1",
        "hostendpoints/h1",
        "globalnetworkpolicies/default.plain",
    ):
        assert R + key in keys(store), key


def test_warning_notes_say_what_is_done_with_each_field():
    """`unenforced_notes`, what the warning says after the resource's name: the fields grouped by what
    this node daemon does with them (pure: no etcd)."""
    web = {
        "spec": {
            "serviceAccountSelector": "role == 'x'",
            "doNotTrack": True,
            "ingress": [
                {"action": "Allow", "http": {"methods": ["GET"]}, "source": {"serviceAccounts": {"names": ["api"]}}},
                {"action": "Allow", "destination": {"services": {"name": "db", "namespace": "prod"}}},
            ],
        }
    }
    sa = "matched on service-account labels (projectcalico.org/serviceaccount, pcsa.*), which endpoints here carry only when labelled by hand"
    assert unenforced_notes("NetworkPolicy", web) == (
        "spec.doNotTrack, spec.ingress[0].http: stored but not enforced by this node daemon",
        f"spec.serviceAccountSelector, spec.ingress[0].source.serviceAccounts: {sa}",
        "spec.ingress[1].destination.services: matches nothing here (no Kubernetes Services)",
    )
    assert unenforced_notes("HostEndpoint", {"spec": {}}) == ("stored but not enforced by this node daemon (only workload endpoints are policed)",)
    assert unenforced_notes("GlobalNetworkPolicy", {"spec": {"applyOnForward": False, "ingress": [{"action": "Allow"}]}}) == ()
    assert unenforced_notes("IPPool", {"spec": {}}) == ()


def test_a_plain_policy_prints_no_warning(ctl, tmp_path):
    r = ok(
        ctl(
            "apply",
            "-f",
            write(tmp_path, gnp("plain", {"selector": "all()", "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]})),
        )
    )
    assert r.stderr == ""


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, needles",
    [
        ({"selector": "app == "}, ("spec.selector", "invalid selector")),
        ({"ingress": [{"action": "Allow", "source": {"selector": "a in {"}}]}, ("spec.ingress[0].source.selector", "invalid selector")),
        ({"selector": "(" * 3000 + "has(a)" + ")" * 3000}, ("spec.selector", "nested too deeply")),
        ({"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [65536]}}]}, ("spec.ingress[0].destination.ports[0]", "65535")),
        (
            {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["0:80"]}}]},
            ("spec.ingress[0].destination.ports[0]", "between 1 and 65535"),
        ),
        ({"egress": [{"action": "Allow", "protocol": "UDP", "source": {"notPorts": ["100:70000"]}}]}, ("spec.egress[0].source.notPorts[0]", "65535")),
        (
            {"ingress": [{"action": "Allow"}] * (MAX_RULES_PER_DIRECTION + 1)},
            ("spec.ingress", "5001 rules: at most 5000 per direction", "Calico has no such limit"),
        ),
        ({"egress": [{"action": "Deny"}] * (MAX_RULES_PER_DIRECTION + 1)}, ("spec.egress", "5001 rules")),
    ],
    ids=["selector", "rule-selector", "deep-selector", "port", "port-zero", "port-range", "ingress-rules", "egress-rules"],
)
@pytest.mark.parametrize("kind", ["GlobalNetworkPolicy", "NetworkPolicy"])
def test_hostile_policies_are_refused_and_nothing_is_written(ctl, store, tmp_path, spec, needles, kind):
    doc = gnp("hostile", spec) if kind == "GlobalNetworkPolicy" else np("hostile", spec)
    for verb in ("apply", "create"):
        failed(ctl(verb, "-f", write(tmp_path, doc)), f"({kind} hostile)", *needles)
    assert keys(store) == []


def test_a_profile_with_too_many_rules_is_refused(ctl, store, tmp_path):
    doc = {"kind": "Profile", "metadata": {"name": "big"}, "spec": {"ingress": [{"action": "Allow"}] * (MAX_RULES_PER_DIRECTION + 1)}}
    failed(ctl("apply", "-f", write(tmp_path, doc)), "spec.ingress", "5001 rules")
    assert keys(store) == []


# -- calicoctl node policy -----------------------------------------------------------------------


@pytest.fixture
def world(ctl, store, tmp_path):
    """Tiers, policies in several tiers (some selecting the endpoint, some not), a profile giving a
    label, a hostile policy written straight to etcd, and the endpoint."""
    docs = [
        tier("security", 100),
        tier("platform", 200, "Pass"),
        gnp(
            "security.deny-db",
            {"tier": "security", "order": 10, "selector": "app == 'web'", "ingress": [{"action": "Deny", "source": {"selector": "app == 'db'"}}]},
        ),
        np("security.allow-lb", {"tier": "security", "order": 20, "selector": "team == 'a'", "types": ["Ingress", "Egress"]}),
        gnp("platform.egress-all", {"tier": "platform", "selector": "all()", "types": ["Egress"], "egress": [{"action": "Pass"}]}),
        np("allow-web", {"order": 5, "selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}]}),
        gnp("other", {"selector": "app == 'db'", "ingress": [{"action": "Allow"}]}),
        np("elsewhere", {"selector": "all()"}, namespace="prod"),
        {"kind": "Profile", "metadata": {"name": "net1"}, "spec": {"labelsToApply": {"team": "a", "app": "overridden"}, "ingress": [{"action": "Allow"}]}},
        wep(labels={"app": "web"}, profiles=("net1", "missing")),
        wep(name="node1-cni-c2-eth0", namespace="prod", iface="cali00000000002", nets=["198.18.0.6/32"]),
        wep(name="node1-cni-c3-eth0", iface="cali00000000003", nets=[]),
    ]
    ok(ctl("apply", "-f", write(tmp_path, *docs)))
    hostile = {
        "kind": "GlobalNetworkPolicy",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default.huge"},
        "spec": {"selector": "all()", "ingress": [{"action": "Allow"}] * (MAX_RULES_PER_DIRECTION + 1)},
    }
    assert store.client.commit([], [(R + "globalnetworkpolicies/default.huge", json.dumps(hostile).encode())])[0]
    return ctl


EXPECTED_TEXT = f"""\
Workload endpoint default/node1-cni-c1-eth0
  node:       node1
  interface:  {IFACE}
  addresses:  198.18.0.5/32, fd00:198:18::5/128
  profiles:   net1, missing
  labels:
    app=web
    projectcalico.org/namespace=default
    projectcalico.org/orchestrator=cni
    team=a  (from profile net1)
  chains on node node1: ingress tw-{IFACE}, egress fw-{IFACE}
    nft list chain ip calico tw-{IFACE}
    nft list chain ip calico fw-{IFACE}
    nft list chain ip6 calico tw-{IFACE}
    nft list chain ip6 calico fw-{IFACE}

Ingress (to the endpoint; chain tw-{IFACE}):
  tier security (order 100):
    1. GlobalNetworkPolicy security.deny-db, order 10  (chain pi-security.deny-db)
    2. NetworkPolicy default/security.allow-lb, order 20  (chain pi-default/security.allow-lb)
    end of tier security: drop
  tier default (order 1e+06):
    1. NetworkPolicy default/allow-web, order 5  (chain pi-default/default.allow-web)
    end of tier default: drop
  then, when no tier decided, the profiles:
    1. net1  (chain pri-net1)
    2. missing: does not exist: denies
  finally: drop

Egress (from the endpoint; chain fw-{IFACE}):
  tier security (order 100):
    1. NetworkPolicy default/security.allow-lb, order 20  (chain po-default/security.allow-lb)
    end of tier security: drop
  tier platform (order 200):
    1. GlobalNetworkPolicy platform.egress-all, order none (last)  (chain po-platform.egress-all)
    end of tier platform: pass to the next tier (defaultAction Pass)
  then, when no tier decided, the profiles:
    1. net1  (chain pro-net1)
    2. missing: does not exist: denies
  finally: drop

not enforced here: NetworkPolicy(default/default.allow-web).spec.ingress[0].http
"""


def test_node_policy_shows_tiers_policies_profiles_labels_and_chains(world):
    r = ok(world("node", "policy", "node1-cni-c1-eth0"))
    text, _, left_out = r.stdout.partition("\nRecords left out of policy")
    assert text == EXPECTED_TEXT
    # The hostile record written straight to etcd is named, and the others still apply.
    assert "globalnetworkpolicies/default.huge" in left_out and "5001 rules" in left_out


def test_node_policy_json_and_yaml(world):
    doc = ok(world("node", "policy", "node1-cni-c1-eth0", "-o", "json")).json()
    assert doc["endpoint"]["labels"]["team"] == "a" and doc["endpoint"]["labelSources"]["team"] == "profile net1"
    assert doc["chains"] == {"ingress": f"tw-{IFACE}", "egress": f"fw-{IFACE}"}
    assert [(t["tier"], t["endOfTier"], [p["name"] for p in t["policies"]]) for t in doc["egress"]["tiers"]] == [
        ("security", "drop", ["security.allow-lb"]),
        ("platform", "pass", ["platform.egress-all"]),
    ]
    assert doc["ingress"]["profiles"] == [{"name": "net1", "exists": True, "chain": "pri-net1"}, {"name": "missing", "exists": False, "chain": None}]
    assert doc["ingress"]["final"] == "drop"
    assert doc["notEnforced"] == ["NetworkPolicy(default/default.allow-web).spec.ingress[0].http"]
    assert yaml.safe_load(ok(world("node", "policy", "node1-cni-c1-eth0", "-o", "yaml")).stdout) == doc


def test_node_policy_finds_an_endpoint_by_its_interface_and_in_its_namespace(world):
    by_iface = ok(world("node", "policy", IFACE, "-o", "json")).json()
    assert by_iface["endpoint"]["name"] == "node1-cni-c1-eth0"
    prod = ok(world("node", "policy", "node1-cni-c2-eth0", "-n", "prod", "-o", "json")).json()
    # Its namespace's policy and the global ones; not default's NetworkPolicies.
    assert [p["name"] for t in prod["ingress"]["tiers"] for p in t["policies"]] == ["elsewhere"]
    assert [p["name"] for t in prod["egress"]["tiers"] for p in t["policies"]] == ["platform.egress-all"]
    # Both labels of its profile net1 (the endpoint in default keeps its own app=web over net1's).
    assert prod["endpoint"]["labels"] == {"projectcalico.org/namespace": "prod", "projectcalico.org/orchestrator": "cni", "app": "overridden", "team": "a"}


def test_node_policy_of_a_missing_or_unpoliced_endpoint_fails(world):
    failed(world("node", "policy", "nope"), "workload endpoint default/nope not found")
    failed(world("node", "policy", "node1-cni-c2-eth0"), "workload endpoint default/node1-cni-c2-eth0 not found")
    failed(world("node", "policy", "node1-cni-c3-eth0"), "has no ipNetworks")


def test_node_policy_with_no_policy_and_no_profile(ctl, tmp_path):
    ok(ctl("apply", "-f", write(tmp_path, wep(profiles=()))))
    r = ok(ctl("node", "policy", "node1-cni-c1-eth0"))
    for field in ("Ingress", "Egress"):
        section = r.stdout.split(f"\n{field} (")[1]
        assert "  no policy applies\n  no profile\n  finally: drop" in section


def test_node_policy_of_an_endpoint_calicoctl_would_refuse_says_it_is_not_policed(world, store):
    # Written straight to etcd with a label Calico's validator refuses: calico-node leaves it out.
    hostile = {"apiVersion": "projectcalico.org/v3", **wep(name="node1-cni-c4-eth0", iface="cali00000000004", labels={"bad key": "x"})}
    key = R + "workloadendpoints/default/node1-cni-c4-eth0"
    assert store.client.commit([], [(key, json.dumps(hostile).encode())])[0]
    err = failed(world("node", "policy", "node1-cni-c4-eth0"), "workload endpoint default/node1-cni-c4-eth0 is not policed:", key, "invalid label key")
    assert "not found" not in err
    # Nor is it found by its interface: it is in no node's policy.
    failed(world("node", "policy", "cali00000000004"), "not found")


def test_node_policy_by_an_interface_several_endpoints_share_asks_for_the_name(world, tmp_path):
    # Another endpoint (in prod) on the same host interface as default/node1-cni-c1-eth0.
    ok(world("apply", "-f", write(tmp_path, wep(name="node1-cni-c5-eth0", namespace="prod", nets=["198.18.0.7/32"]))))
    failed(
        world("node", "policy", IFACE),
        f"interface {IFACE} is the host interface of several workload endpoints (default/node1-cni-c1-eth0, prod/node1-cni-c5-eth0)",
        "-n NAMESPACE",
    )
    # -n picks one of them.
    assert ok(world("node", "policy", IFACE, "-n", "prod", "-o", "json")).json()["endpoint"]["name"] == "node1-cni-c5-eth0"
    assert ok(world("node", "policy", IFACE, "-n", "default", "-o", "json")).json()["endpoint"]["name"] == "node1-cni-c1-eth0"


def test_node_policy_by_interface_looks_only_in_the_namespace_given(world):
    # cali00000000002 is prod's endpoint's: found without -n, not found in default.
    assert ok(world("node", "policy", "cali00000000002", "-o", "json")).json()["endpoint"]["name"] == "node1-cni-c2-eth0"
    failed(
        world("node", "policy", "cali00000000002", "-n", "default"),
        "workload endpoint default/cali00000000002 not found (nor an endpoint whose host interface is cali00000000002)",
        "calicoctl get workloadendpoints -A",
    )
