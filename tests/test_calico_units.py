"""Pure parts of the `calico` plugin: names (rules 2 and 3), endpoint records, netlink encoding,
settings and delegation lookups. No namespace or etcd needed."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

import pytest

from calico_cni.dataplane import routing, rtnl, wiring
from calico_cni.datastore.records import WorkloadEndpoint
from calico_cni.plugin import settings
from calico_cni.protocol.delegate import find_plugin
from calico_cni.protocol.errors import CniError
from calico_cni.workload import Identity


def test_endpoint_names_double_dashes_in_every_segment():
    ident = Identity("net-1", "ab-c", "eth-0", "node-a")
    assert ident.endpoint_name == "node--a-cni-ab--c-eth--0"
    assert ident.namespace == "default" and ident.orchestrator == "cni"
    pod = Identity("net1", "c1", "eth0", "n1", "kube-system", "core-dns-1")
    assert pod.endpoint_name == "n1-k8s-core--dns--1-eth0"
    assert pod.namespace == "kube-system" and pod.orchestrator == "k8s"


def test_host_veth_names():
    plain = Identity("net1", "cnitool-1234", "eth0", "n1")
    assert plain.host_veth == "cali" + hashlib.sha1(b"net1.cnitool-1234.eth0").hexdigest()[:11]
    assert len(plain.host_veth) == 15
    # cnitool's IDs share a prefix: hashing the whole attachment keeps them apart (rule 2).
    assert Identity("net1", "cnitool-1235", "eth0", "n1").host_veth != plain.host_veth
    assert Identity("net1", "cnitool-1234", "eth1", "n1").host_veth != plain.host_veth
    pod = Identity("net1", "sandbox-a", "eth0", "n1", "default", "web")
    assert pod.host_veth == "cali" + hashlib.sha1(b"default.web").hexdigest()[:11]
    assert Identity("net2", "sandbox-b", "eth0", "n1", "default", "web").host_veth == pod.host_veth


def test_alias_names_the_attachment_and_fits_a_link_alias():
    ident = Identity("net1", "c1", "eth0", "n1")
    assert ident.alias == "calico:net1/c1/eth0" and ident.owns_alias("calico:net1/c1/eth0")
    assert not ident.owns_alias("calico:net1/c1/eth1") and not ident.owns_alias("")
    long = Identity("net1", "c" * 1000, "eth0", "n1")
    assert long.alias.startswith("calico:sha256:") and len(long.alias) <= 255
    assert long.alias != Identity("net1", "c" * 999, "eth0", "n1").alias


def test_endpoint_ownership_is_by_container_id():
    ident = Identity("net1", "new", "eth0", "n1", "ns", "pod")
    mine = WorkloadEndpoint("ns", ident.endpoint_name, ident.endpoint_doc("cali1", "aa:bb:cc:dd:ee:ff", [], "u", "t"))
    assert ident.owns_endpoint(mine)
    old = Identity("net1", "old", "eth0", "n1", "ns", "pod")
    assert not old.owns_endpoint(mine), "rule 4: an old sandbox never owns the new sandbox's endpoint"
    assert mine.doc["spec"]["pod"] == "pod" and mine.doc["spec"]["profiles"] == ["kns.ns"]


def test_eui64_link_local_of_calicos_mac():
    assert str(routing.eui64_link_local("ee:ee:ee:ee:ee:ee")) == "fe80::ecee:eeff:feee:eeee"
    assert str(routing.eui64_link_local("02:00:00:00:00:01")) == "fe80::ff:fe00:1"


def test_narrow():
    assert str(wiring.narrow("198.18.0.5/26")) == "198.18.0.5/32"
    assert str(wiring.narrow("fd00:198:18::5/122")) == "fd00:198:18::5/128"


def test_netlink_attributes_round_trip():
    data = rtnl.attr(3, b"eth0\0") + rtnl.attr(4, struct.pack("=I", 1400)) + rtnl.attr(20, b"abc")
    assert len(data) % 4 == 0
    assert rtnl.parse_attrs(data) == {3: b"eth0\0", 4: struct.pack("=I", 1400), 20: b"abc"}
    # A truncated attribute ends the parse instead of reading past the buffer.
    assert rtnl.parse_attrs(data[:-2]) == {3: b"eth0\0", 4: struct.pack("=I", 1400)}


def test_decode_link_message():
    info = rtnl.attr(rtnl.IFLA_INFO_KIND, b"veth\0")
    payload = struct.pack("=BxHiII", 0, 1, 7, rtnl.IFF_UP, 0) + rtnl.attr(rtnl.IFLA_IFNAME, b"cali0\0")
    payload += rtnl.attr(rtnl.IFLA_MTU, struct.pack("=I", 1450)) + rtnl.attr(rtnl.IFLA_ADDRESS, bytes([0xEE] * 6))
    payload += rtnl.attr(rtnl.IFLA_IFALIAS, b"calico:n/c/eth0") + rtnl.attr(rtnl.IFLA_LINKINFO, info)
    link = rtnl.decode_link(payload)
    assert (link.index, link.name, link.mtu, link.mac, link.alias, link.kind, link.up) == (
        7, "cali0", 1450, "ee:ee:ee:ee:ee:ee", "calico:n/c/eth0", "veth", True,
    )


def test_decode_route_message():
    payload = struct.pack("=BBBBBBBBI", 10, 0, 0, 0, 254, 3, 0, 1, 0)
    payload += rtnl.attr(rtnl.RTA_GATEWAY, ipaddress.ip_address("fe80::1").packed) + rtnl.attr(rtnl.RTA_OIF, struct.pack("=I", 2))
    route = rtnl.decode_route(payload)
    assert str(route.dst) == "::/0" and str(route.gateway) == "fe80::1" and route.oif == 2 and route.table == 254


def conf(**extra) -> dict:
    return {"cniVersion": "1.0.0", "name": "n", "type": "calico", "ipam": {"type": "calico-ipam"}, **extra}


def test_settings():
    assert settings(conf()).mtu is None and settings(conf(mtu=0)).mtu is None
    assert settings(conf(mtu=1450)).mtu == 1450
    assert settings(conf(container_settings={"allow_ip_forwarding": "true"})).allow_ip_forwarding
    for bad in ({"mtu": "1450"}, {"mtu": True}, {"container_settings": "x"}, {"container_settings": {"allow_ip_forwarding": "yes"}}):
        with pytest.raises(CniError) as err:
            settings(conf(**bad))
        assert err.value.code == 7


def test_find_plugin(tmp_path):
    exe = tmp_path / "my-ipam"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "not-exec").write_text("")
    assert find_plugin("my-ipam", ["/nonexistent", str(tmp_path)]) == str(exe)
    for name in ("../my-ipam", "a/b", "not-exec", "missing"):
        with pytest.raises(CniError) as err:
            find_plugin(name, [str(tmp_path)])
        assert err.value.code == 7
