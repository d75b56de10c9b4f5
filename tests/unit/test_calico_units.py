"""Pure parts of the `calico` plugin: names (host veth, link alias), endpoint records, netlink encoding,
settings, delegation lookups, and the endpoint's compare-and-swap writes against a stand-in store. No
root, namespace or etcd needed."""

from __future__ import annotations

import logging

import hashlib
import ipaddress
import struct

import pytest

from calico_cni.datastore import retry
from calico_cni.datastore.errors import TooManyConflicts
from calico_cni.dataplane import mtu, routing, rtnl, wiring
from calico_cni.dataplane.errors import MtuError
from calico_cni.model.records import WorkloadEndpoint
from calico_cni.config import ConfigError, calico_settings
from calico_cni.plugins.errors import cni_error
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
    # cnitool's IDs share a prefix: hashing the whole attachment keeps their veth names apart.
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
    assert not old.owns_endpoint(mine), "an old sandbox never owns the new sandbox's endpoint"
    # A pod names the network's profile, as Calico's plugin does without policy.type k8s (issue 15
    # item 2; it named kns.<namespace> before, a profile nobody created).
    assert mine.doc["spec"]["pod"] == "pod" and mine.doc["spec"]["profiles"] == ["net1"]


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
        7,
        "cali0",
        1450,
        "ee:ee:ee:ee:ee:ee",
        "calico:n/c/eth0",
        "veth",
        True,
    )


def test_decode_route_message():
    payload = struct.pack("=BBBBBBBBI", 10, 0, 0, 0, 254, 3, 0, 1, 0)
    payload += rtnl.attr(rtnl.RTA_GATEWAY, ipaddress.ip_address("fe80::1").packed) + rtnl.attr(rtnl.RTA_OIF, struct.pack("=I", 2))
    route = rtnl.decode_route(payload)
    assert str(route.dst) == "::/0" and str(route.gateway) == "fe80::1" and route.oif == 2 and route.table == 254


def conf(**extra) -> dict:
    return {"cniVersion": "1.0.0", "name": "n", "type": "calico", "ipam": {"type": "calico-ipam"}, **extra}


def settings(config: dict):
    """The `calico` plugin's settings of `config` (no node name read)."""
    return calico_settings(config, {}, resolve_node=False)


def test_mtu_key_above_the_mtu_file_wins_with_a_warning(tmp_path, caplog):
    path = tmp_path / "mtu"
    path.write_text("1450\n")
    with caplog.at_level(logging.WARNING, "calico_cni.dataplane.mtu"):
        assert mtu.decide(1450, None, str(path)) == (1450, "the mtu key")
        assert not caplog.records
        assert mtu.decide(1500, None, str(path)) == (1500, "the mtu key")
    assert "mtu 1500 is above 1450" in caplog.records[0].getMessage()


def test_settings():
    assert settings(conf()).mtu is None and settings(conf(mtu=0)).mtu is None
    assert settings(conf()).mtu_file is None and settings(conf(mtu_file="/run/calico/mtu")).mtu_file == "/run/calico/mtu"
    with pytest.raises(ConfigError) as err:
        settings(conf(mtu_file="mtu"))
    assert cni_error(err.value).code == 7 and "absolute" in err.value.msg
    assert settings(conf(mtu=1450)).mtu == 1450
    assert settings(conf(container_settings={"allow_ip_forwarding": "true"})).allow_ip_forwarding
    for bad in ({"mtu": "1450"}, {"mtu": True}, {"container_settings": "x"}, {"container_settings": {"allow_ip_forwarding": "yes"}}):
        with pytest.raises(ConfigError) as err:
            settings(conf(**bad))
        assert cni_error(err.value).code == 7


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


# ------------------------------------------------------------------------------------------------
# The endpoint's compare-and-swap writes (retry.with_retries): lost races re-read, and give up


class RacingStore:
    """A datastore stand-in: `commit` loses the first `losses` races; each re-read returns `stored`."""

    def __init__(self, stored, losses: int) -> None:
        self.stored, self.losses = stored, losses
        self.commits: list = []
        self.reads = 0

    def commit(self, puts=(), deletes=(), unchanged=()):
        self.commits.append((list(puts), list(deletes)))
        if self.losses:
            self.losses -= 1
            return False
        return True

    def workload_endpoint(self, namespace, name, ready_check=False):
        self.reads += 1
        return self.stored


def _endpoint(ident: Identity, revision: int, uid: str = "uid-1") -> WorkloadEndpoint:
    return WorkloadEndpoint(ident.namespace, ident.endpoint_name, ident.endpoint_doc("cali1", "aa:bb:cc:dd:ee:ff", [], uid, "t"), revision)


def test_endpoint_write_rereads_after_a_lost_race_and_keeps_the_uid():
    from calico_cni.plugins.calico import _write_endpoint

    ident = Identity("net1", "c1", "eth0", "n1")
    store = RacingStore(_endpoint(ident, revision=7), losses=1)
    uid = _write_endpoint(store, ident, "cali1", "aa:bb:cc:dd:ee:ff", [ipaddress.ip_interface("198.18.0.5/32")])
    assert uid == "uid-1" and store.reads == 1
    (first, _), (second, _) = store.commits
    assert first[0].revision == 0 and second[0].revision == 7, "the retry compares against the re-read revision"


def test_endpoint_writes_that_keep_losing_end_in_error_11(mocker):
    from calico_cni.plugins import calico as plugin

    mocker.patch("calico_cni.datastore.retry.time.sleep")
    ident = Identity("net1", "c1", "eth0", "n1")
    store = RacingStore(_endpoint(ident, revision=3), losses=10**6)
    with pytest.raises(TooManyConflicts) as err:
        plugin._write_endpoint(store, ident, "cali1", "aa:bb:cc:dd:ee:ff", [])
    assert cni_error(err.value).code == 11 and "writing endpoint default/" in err.value.msg
    assert len(store.commits) == retry.MAX_ATTEMPTS
    store = RacingStore(_endpoint(ident, revision=3), losses=10**6)
    with pytest.raises(TooManyConflicts) as err:
        plugin._delete_endpoint(store, ident, store.stored)
    assert cni_error(err.value).code == 11 and "deleting endpoint default/" in err.value.msg


def test_endpoint_delete_stops_when_the_reread_endpoint_is_a_new_sandboxes():
    from calico_cni.plugins.calico import _delete_endpoint

    old = Identity("net1", "old", "eth0", "n1", "ns", "pod")
    new = Identity("net1", "new", "eth0", "n1", "ns", "pod")
    store = RacingStore(_endpoint(new, revision=9), losses=1)
    assert _delete_endpoint(store, old, _endpoint(old, revision=5)) is False, "never the new sandbox's endpoint"
    assert len(store.commits) == 1 and store.reads == 1


def test_unusable_mtu_settings_are_error_7_before_any_interface(tmp_path):
    # No host is needed: an MTU setting is checked before the default route is read.
    with pytest.raises(MtuError) as err:
        mtu.decide(67, None)
    assert (err.value.msg, err.value.details) == ("mtu: MTU 67 is out of range", "an MTU is 68 to 65535")
    assert cni_error(err.value).code == 7
    assert mtu.decide(65535, None) == (65535, "the mtu key")
    path = tmp_path / "mtu"
    path.write_text("70000\n")
    with pytest.raises(MtuError, match="MTU 70000 is out of range") as err:
        mtu.decide(None, None, str(path))
    assert cni_error(err.value).code == 7
    path.write_text("jumbo")
    with pytest.raises(MtuError, match="does not hold an MTU") as err:
        mtu.decide(None, None, str(path))
    assert cni_error(err.value).code == 7
    with pytest.raises(MtuError) as err:
        mtu.decide(None, None, str(tmp_path))  # a directory: reading it fails with an OSError
    assert err.value.msg == f"cannot read the MTU from {tmp_path}" and err.value.details
    assert cni_error(err.value).code == 7


def test_names_and_journal_keys_use_the_interpreters_own_digests_not_hashlib():
    """hashlib loads OpenSSL (3.6 ms of an in-process plugin run): the attachment's names and
    journal keys use the interpreter's own SHA modules, `_sha256` here and `_sha2` where Python
    3.12 and later renamed it (simulated: `_sha256` missing, `_sha2` given)."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "real = __import__('_sha256').sha256\n"
        "if sys.argv[1] == 'renamed':\n"
        "    sys.modules['_sha256'] = None\n"
        "    sys.modules['_sha2'] = types.ModuleType('_sha2')\n"
        "    sys.modules['_sha2'].sha256 = real\n"
        "import calico_cni.journal as j, calico_cni.workload as w\n"
        "print('hashlib' in sys.modules, j.sha256 is real, w.sha256 is real,"
        " w.Identity('n', 'c', 'eth0', 'node').host_veth, j.attachment_key('n', 'c', 'eth0'))\n"
    )
    expected = ["False", "True", "True", "cali" + hashlib.sha1(b"n.c.eth0").hexdigest()[:11], hashlib.sha256(b"n/c/eth0").hexdigest()[:40]]
    for case in ("here", "renamed"):
        out = subprocess.run([sys.executable, "-c", code, case], capture_output=True, text=True, check=True, timeout=30).stdout.split()
        assert out == expected, (case, out)
