"""`calico` with an IPAM plugin other than calico-ipam: delegation by exec as the CNI spec says
(here Debian's host-local), and calico-ipam called in-process without any exec."""

from __future__ import annotations

import os

import pytest

from tests.calico_support import assert_node_clean, held_addresses, ip_json, ok, pod_env, pod_links, run_calico
from tests.pools import create_pool

HOST_LOCAL = "/usr/lib/cni/host-local"
pytestmark = [pytest.mark.execs_plugins, pytest.mark.skipif(not os.access(HOST_LOCAL, os.X_OK), reason="Debian's containernetworking-plugins is not installed")]


@pytest.fixture
def host_local_conf(calico_conf, tmp_path):
    data_dir = tmp_path / "host-local"

    def make(**extra) -> dict:
        ipam = {
            "type": "host-local",
            "ranges": [[{"subnet": "198.18.4.0/24", "rangeStart": "198.18.4.10", "rangeEnd": "198.18.4.20"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.51.100.0/24"}],
            "dataDir": str(data_dir),
        }
        return calico_conf(ipam=ipam, **extra)

    make.data_dir = data_dir
    return make


def allocations(data_dir) -> dict[str, str]:
    """host-local's store: address file -> container ID."""
    net = data_dir / "net1"
    if not net.exists():
        return {}
    return {f.name: f.read_text().split()[0] for f in net.iterdir() if f.name[0].isdigit()}


def test_host_local_add_check_del(store, node, pod, host_local_conf):
    conf = host_local_conf()
    p = pod()
    env = pod_env(p)
    result = ok(run_calico(node, "ADD", conf, env))
    assert result["ips"] == [{"interface": 1, "address": "198.18.4.10/32"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "198.51.100.0/24"}], "routes as the IPAM result gives them"
    assert allocations(host_local_conf.data_dir) == {"198.18.4.10": env["CNI_CONTAINERID"]}
    assert held_addresses(store) == {}, "calico-ipam was not used"
    routes = {(r["dst"], r.get("gateway")) for r in ip_json(p, "-4", "route", "show")}
    assert routes == {("169.254.1.1", None), ("default", "169.254.1.1"), ("198.51.100.0/24", "169.254.1.1")}
    assert [e.ip_networks for e in store.workload_endpoints()] == [["198.18.4.10/32"]]

    prev = {**conf, "prevResult": result}
    ok(run_calico(node, "CHECK", prev, env))
    # A repeated ADD returns the same result without asking host-local again.
    assert ok(run_calico(node, "ADD", conf, env)) == result
    assert allocations(host_local_conf.data_dir) == {"198.18.4.10": env["CNI_CONTAINERID"]}

    # CHECK is forwarded too: host-local no longer knowing the address is named.
    record = host_local_conf.data_dir / "net1" / "198.18.4.10"
    saved = record.read_bytes()
    record.unlink()
    run = run_calico(node, "CHECK", prev, env)
    assert run.rc != 0 and "IPAM plugin host-local: " in run.out["msg"], run.stdout
    assert env["CNI_CONTAINERID"] in run.out["msg"]
    record.write_bytes(saved)

    ok(run_calico(node, "DEL", prev, env))
    assert allocations(host_local_conf.data_dir) == {}
    assert pod_links(p) == []
    assert_node_clean(node)
    assert store.workload_endpoints() == []
    ok(run_calico(node, "DEL", prev, env))


def test_host_local_rollback_releases_by_del(store, node, pod, host_local_conf):
    """A failure after the delegated ADD makes host-local release the address (exec DEL)."""
    from tests import netns

    netns.ip("-n", node.name, "link", "add", "blk0", "type", "veth", "peer", "name", "blk1")
    netns.ip("-n", node.name, "link", "set", "blk0", "up")
    netns.ip("-n", node.name, "route", "add", "198.18.4.10/32", "dev", "blk0")
    p = pod()
    run = run_calico(node, "ADD", host_local_conf(), pod_env(p))
    assert run.rc != 0 and "198.18.4.10/32" in run.out["msg"]
    assert allocations(host_local_conf.data_dir) == {}
    assert pod_links(p) == [] and node.cali_links() == []
    assert store.workload_endpoints() == []


def test_missing_ipam_plugin_is_a_clear_error(store, node, pod, host_local_conf, tmp_path):
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    p = pod()
    run = run_calico(node, "ADD", host_local_conf(), pod_env(p, CNI_PATH=str(empty)))
    assert run.rc != 0 and run.out["code"] == 7
    assert run.out["msg"] == f'failed to find plugin "host-local" in path [\'{empty}\']'
    assert pod_links(p) == [] and store.workload_endpoints() == []


def test_calico_ipam_runs_in_process(store, node, pod, calico_conf, tmp_path):
    """With ipam.type calico-ipam no IPAM executable is needed: CNI_PATH holds no plugin at all."""
    create_pool(store, "v4", "198.18.5.0/24", 26)
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    p = pod()
    env = pod_env(p, CNI_PATH=str(empty))
    result = ok(run_calico(node, "ADD", calico_conf(), env))
    assert result["ips"][0]["address"].startswith("198.18.5.")
    assert list(held_addresses(store)) == [f"net1.{env['CNI_CONTAINERID']}"]
    ok(run_calico(node, "DEL", calico_conf(), env))
    assert held_addresses(store) == {}


FAKE_IPAM = """#!/bin/sh
cat > /dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID" >> {calls}
if [ "$CNI_COMMAND" = ADD ]; then echo '{result}'; fi
"""


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        ('{"cniVersion": "1.0.0", "ips": []}', 101, "IPAM plugin fake-ipam returned no address"),
        (
            '{"cniVersion": "1.0.0", "ips": [{"address": "198.18.4.30/24"}], "routes": [{"dst": "not-a-network"}]}',
            7,
            "IPAM plugin fake-ipam returned an invalid route",
        ),
    ],
    ids=["no address", "invalid route"],
)
def test_unusable_ipam_result_fails_and_releases_it(store, node, pod, calico_conf, tmp_path, answer, code, words):
    """A delegated IPAM result without an address or with a route that does not parse: ADD fails
    with the error naming the plugin, gives the addresses back (DEL to the IPAM plugin) and leaves
    no link and no endpoint."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fake = bin_dir / "fake-ipam"
    fake.write_text(FAKE_IPAM.format(calls=calls, result=answer))
    fake.chmod(0o755)
    p = pod()
    env = pod_env(p, CNI_PATH=f"{bin_dir}:/usr/lib/cni")
    run = run_calico(node, "ADD", calico_conf(ipam={"type": "fake-ipam"}), env)
    assert run.rc != 0 and run.out["code"] == code and words in run.out["msg"], run.stdout
    assert calls.read_text().split("\n")[:2] == [f"ADD {env['CNI_CONTAINERID']}", f"DEL {env['CNI_CONTAINERID']}"]
    assert pod_links(p) == []
    assert_node_clean(node)
    assert store.workload_endpoints() == []
