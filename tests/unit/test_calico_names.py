"""Issue 15, items 2 and 6, pure parts: the profiles an endpoint names and the content they are
created with, `policy.type`, and the names Calico's validator refuses. No root or etcd needed."""

from __future__ import annotations

import json

import pytest

from calico_cni.config import check_policy_type, ConfigError, calico_settings
from calico_cni.workload import Identity, ProfileRecord, network_profile


def test_profiles_follow_policy_type():
    """cni-plugin/pkg/k8s/k8s.go (v3.30.0): a pod names the network's profile unless policy.type is
    k8s, then its namespace's kns.<namespace>; a plain-CNI endpoint always names the network."""
    assert Identity("net1", "c1", "eth0", "n1").profiles() == ["net1"]
    assert Identity("net1", "c1", "eth0", "n1", "web", "pod").profiles() == ["net1"]
    assert Identity("net1", "c1", "eth0", "n1", "web", "pod", k8s_policy=True).profiles() == ["kns.web"]
    assert Identity("net1", "c1", "eth0", "n1", k8s_policy=True).profiles() == ["net1"]


def test_profile_content_as_calico_creates_it():
    """plugin.go cmdAdd (v3.30.0): egress allow all; ingress allow from has(<network>), or all for a
    Kubernetes pod; labelsToApply {<network>: ""}. kube-controllers' NamespaceToProfile: allow all
    both ways, pcns.projectcalico.org/name. A Go Rule encodes its empty source and destination."""
    allow = {"action": "Allow", "source": {}, "destination": {}}
    assert Identity("net1", "c1", "eth0", "n1").profile_specs() == {
        "net1": {"ingress": [{"action": "Allow", "source": {"selector": "has(net1)"}, "destination": {}}], "egress": [allow], "labelsToApply": {"net1": ""}}
    }
    assert Identity("net1", "c1", "eth0", "n1", "web", "pod").profile_specs() == {
        "net1": {"ingress": [allow], "egress": [allow], "labelsToApply": {"net1": ""}}
    }
    assert Identity("net1", "c1", "eth0", "n1", "web", "pod", k8s_policy=True).profile_specs() == {
        "kns.web": {"ingress": [allow], "egress": [allow], "labelsToApply": {"pcns.projectcalico.org/name": "web"}}
    }
    record = ProfileRecord("net1", network_profile("net1", False), "u-1", "2025-01-01T00:00:00Z")
    assert record.key == "/calico/resources/v3/projectcalico.org/profiles/net1" and record.revision == 0
    doc = json.loads(record.to_json())
    assert list(doc) == ["kind", "apiVersion", "metadata", "spec"]
    assert doc["metadata"] == {"name": "net1", "uid": "u-1", "creationTimestamp": "2025-01-01T00:00:00Z"}


def test_policy_type_setting():
    base = {"name": "net1", "type": "calico", "ipam": {"type": "calico-ipam"}, "etcd_endpoints": "http://127.0.0.1:2379"}
    assert calico_settings(base, {}, resolve_node=False).policy_type == ""
    assert calico_settings({**base, "policy": {"type": "k8s"}}, {}, resolve_node=False).policy_type == "k8s"
    for bad in ({"type": 1}, "k8s"):
        with pytest.raises(ConfigError, match="policy"):
            calico_settings({**base, "policy": bad}, {}, resolve_node=False)
    # A string Calico accepts but this plugin does not act on: parsed (a DEL must still work),
    # refused by ADD's check.
    other = calico_settings({**base, "policy": {"type": "calico"}}, {}, resolve_node=False)
    assert other.policy_type == "calico"
    with pytest.raises(ConfigError, match='policy.type must be "k8s" or absent'):
        check_policy_type(other.policy_type)
    check_policy_type("") or check_policy_type("k8s")


@pytest.mark.parametrize(
    ("ident", "words"),
    [
        (Identity("net1", "abc_def", "eth0", "n1"), ["CNI_CONTAINERID", "[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"]),
        (Identity("net1", "abc.def", "eth0", "n1"), ["CNI_CONTAINERID", "no '_' or '.'"]),
        (Identity("net1", "-abc", "eth0", "n1", "web", "pod"), ["CNI_CONTAINERID"]),
        (Identity("net1", "ABC123", "eth0", "n1"), ["endpoint name", "CNI_CONTAINERID", "lower-case DNS-1123"]),
        (Identity("net1", "abc", "eth0", "Node1"), ["node name 'Node1'", "lower-case DNS-1123"]),
        (Identity("net1", "abc", "eth0", "node_1"), ["node name"]),
        (Identity("net1", "abc", "Eth0", "n1"), ["CNI_IFNAME"]),
        (Identity("Net1", "abc", "eth0", "n1"), ["profile 'Net1'"]),
        (Identity("n" * 64, "abc", "eth0", "n1"), ["label key", "63"]),
    ],
)
def test_names_calico_refuses(ident, words):
    problem = ident.refused_name()
    assert problem is not None
    for word in words:
        assert word in problem, (word, problem)


def test_names_calico_accepts():
    """Hex IDs (cnitool's, podman's, containerd's), upper case in a pod's container ID (not part of
    its endpoint name), dotted node names, a 63-character network name."""
    for ident in (
        Identity("net1", "cnitool-77383ca0a0715733ca6f", "eth0", "n1"),
        Identity("podman", "9f1c2e" * 10 + "abcd", "eth0", "node-1.example.com"),
        Identity("net1", "ABC123", "eth0", "n1", "web", "pod"),
        Identity("n" * 63, "abc", "net1", "n1"),
        Identity("net1", "abc", "eth0", "n1", "web", "pod", k8s_policy=True),
    ):
        assert ident.refused_name() is None, ident


def test_hand_checks_match_calicos_patterns():
    """valid_name and valid_container_id agree with the patterns of Calico's validator (v3.30.0)."""
    import re

    from hypothesis import given, strategies as st

    from calico_cni.workload import CONTAINER_ID_FMT, NAME_FMT, valid_container_id, valid_name

    name_re, cid_re = re.compile(NAME_FMT), re.compile(CONTAINER_ID_FMT)

    @given(st.text(alphabet="abzAZ09-._", max_size=12))
    def agree(text):
        assert valid_name(text) == bool(name_re.fullmatch(text))
        assert valid_container_id(text) == bool(cid_re.fullmatch(text))

    agree()
    assert not valid_name("a" * 254) and valid_name("a" * 253)


def test_hand_copied_constants_match_the_model():
    """workload.py spells out what `model.kinds`, `model.resource` and `model.checks` define (the
    exec'd ADD must not import them): the copies must stay equal to their sources."""
    import re

    from hypothesis import given, strategies as st

    from calico_cni.model import checks, kinds
    from calico_cni.model.kinds.policy import PROFILE
    from calico_cni.model.resource import prefix
    from calico_cni import workload

    assert workload.API_VERSION == kinds.API_VERSION
    assert workload.PROFILES == prefix(PROFILE)
    assert workload.NAME_MAX == 253 and re.fullmatch(workload.NAME_FMT, "a.b-c")

    @given(st.text(alphabet="abzAZ09-._", max_size=12) | st.just("a" * 254))
    def agree(text):
        assert workload.valid_name(text) == (checks.dns_subdomain(text) is None)

    agree()
