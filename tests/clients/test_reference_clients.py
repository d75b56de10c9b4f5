"""Real clients (cnitool, podman) driving Debian's reference plugins (ptp + host-local, portmap,
bandwidth from /usr/lib/cni) inside node namespaces.

These prove the harness, and they are the template for the `calico` tests: swap `ptp_conflist` for
a conflist whose first plugin is `calico`, keep the rest. Pools come from 198.18.0.0/16 only; test
traffic flows only between namespaces the session created (pod, node, fabric).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.conftest import FABRIC_ADDRESS
from tests.clients.harness import (
    BANDWIDTH,
    PORTMAP,
    SHAPING,
    assert_shaped_and_port_mapped,
    assert_shaping_and_port_mapping_gone,
    cnitool,
    cnitool_attachment,
    has_link,
    host_interfaces,
    host_local_addresses,
    http_get,
    http_server,
    ipv4_addresses,
    links,
    ping,
    run_in,
    wait_until,
    write_conflist,
)

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

def ptp_conflist(name: str, subnet: str, data_dir: Path, *chained: dict) -> dict:
    """ptp with host-local (its store in `data_dir`), then the chained plugins."""
    ptp = {
        "type": "ptp",
        "ipMasq": False,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(data_dir),
        },
    }
    return {"cniVersion": "1.0.0", "name": name, "plugins": [ptp, *chained]}


def test_node_is_on_the_fabric(node, make_node, etcd):
    """The harness's node layout: the node reaches etcd on the fabric address, the fabric and
    another node reach the node address."""
    version = http_get(node.path, f"http://{FABRIC_ADDRESS}:2379/version").ok().stdout
    assert "etcdserver" in version
    ping(None, node.address).ok()
    other = make_node()
    ping(other.path, node.address).ok()


def test_cnitool_ptp_portmap_bandwidth(cnitool_bin, node, make_netns, netconf_dir, tmp_path):
    """cnitool add/check/del of ptp + portmap + bandwidth: the host port reaches the pod's server,
    shaping is installed, CHECK passes, DEL leaves nothing."""
    data_dir = tmp_path / "host-local"
    write_conflist(netconf_dir, ptp_conflist("ref-ptp", "198.18.1.0/24", data_dir, PORTMAP, BANDWIDTH))
    pod = make_netns()
    ports = [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]
    caps = {"portMappings": ports, "bandwidth": SHAPING}
    common = dict(node=node, netconf_dir=netconf_dir)

    with cnitool_attachment("ref-ptp", pod, cap_args=caps, **common) as added:
        result = added.json()
        (ip,) = result["ips"]
        pod_ip = str(ipaddress.ip_interface(ip["address"]).ip)
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network("198.18.1.0/24")
        assert ipv4_addresses(pod, "eth0") == [pod_ip]
        assert host_local_addresses(data_dir, "ref-ptp") == [pod_ip]
        host_if = host_interfaces(result)[0]
        assert [link["ifname"] for link in links(node.path, "type", "veth")] == [node.uplink, host_if]
        # bandwidth: a tbf on the host veth (pod ingress) and an ifb, in the result, for its egress.
        assert_shaped_and_port_mapped(node, pod, pod_ip, result, tmp_path / "www", "hello from the pod\n")

        # portmap 1.1.1 fails CHECK when port mappings are passed (cni-protocol.md): leave them out.
        cnitool("check", "ref-ptp", pod, cap_args={"bandwidth": SHAPING}, **common).ok()

        cnitool("del", "ref-ptp", pod, cap_args=caps, **common).ok()
        assert_shaping_and_port_mapping_gone(node, "ref-ptp", pod, pod_ip)
        assert not has_link(node.path, host_if)
        assert host_local_addresses(data_dir, "ref-ptp") == []

        # DEL again (the spec: it must succeed).
        cnitool("del", "ref-ptp", pod, cap_args=caps, **common).ok()


def test_cnitool_check_names_a_missing_address(cnitool_bin, node, make_netns, netconf_dir, tmp_path):
    """CHECK through cnitool passes after ADD and fails, with the plugin's message, once the pod's
    address is removed by hand."""
    write_conflist(netconf_dir, ptp_conflist("ref-check", "198.18.2.0/24", tmp_path / "host-local"))
    pod = make_netns()
    common = dict(node=node, netconf_dir=netconf_dir)
    with cnitool_attachment("ref-check", pod, **common) as added:
        (ip,) = added.json()["ips"]
        cnitool("check", "ref-check", pod, **common).ok()
        run_in(pod, ["ip", "addr", "del", ip["address"], "dev", "eth0"]).ok()
        checked = cnitool("check", "ref-check", pod, **common)
        assert checked.rc != 0, checked.describe()
        assert str(ipaddress.ip_interface(ip["address"]).ip) in checked.stderr, checked.describe()


def test_cnitool_pod_reachable_from_another_node(cnitool_bin, node, make_node, make_netns, netconf_dir, tmp_path):
    """A pod on one node is reached from another node through the fabric (fabric route to the
    pool via the pod's node)."""
    write_conflist(netconf_dir, ptp_conflist("ref-remote", "198.18.3.0/24", tmp_path / "host-local"))
    pod = make_netns()
    node.route_from_fabric("198.18.3.0/24")
    other = make_node()
    with cnitool_attachment("ref-remote", pod, node=node, netconf_dir=netconf_dir) as added:
        (ip,) = added.json()["ips"]
        pod_ip = str(ipaddress.ip_interface(ip["address"]).ip)
        with http_server(pod, tmp_path / "www", "remote\n", port=8080):
            assert http_get(other.path, f"http://{pod_ip}:8080/").ok().stdout == "remote\n"
        ping(other.path, pod_ip).ok()


def test_podman_container_on_ptp_network(podman, node, busybox_rootfs, tmp_path):
    """podman (CNI backend) runs a busybox container on a ptp network from a local rootfs: it gets
    an address from the pool, the node reaches its server, and `podman rm` frees the address."""
    data_dir = tmp_path / "host-local"
    podman.write_network(ptp_conflist("ref-podman", "198.18.4.0/24", data_dir))
    # The CNI backend, although netavark is installed too (the test's containers.conf says so).
    assert podman("info", "--format", "{{.Host.NetworkBackend}}").ok().stdout.strip() == "cni"
    listed = podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").ok()
    assert "ref-podman ptp" in listed.stdout.splitlines(), listed.describe()

    served = "hello from the container\n"
    container = podman.run(
        "ref-podman",
        busybox_rootfs,
        ["sh", "-c", f"printf '{served.strip()}\\n' > /www/index.html && exec httpd -f -p 80 -h /www"],
        options=["--tmpfs", "/www"],
    ).ok()
    address = podman.address(container)
    assert ipaddress.ip_address(address) in ipaddress.ip_network("198.18.4.0/24")
    assert host_local_addresses(data_dir, "ref-podman") == [address]
    inside = podman.exec(container.name, "ip", "-4", "-o", "addr", "show", "dev", "eth0").ok()
    assert f"inet {address}/" in inside.stdout, inside.describe()

    # The host end of the container's veth is in the node namespace podman ran in.
    (host_veth,) = [link["ifname"] for link in links(node.path, "type", "veth") if link["ifname"] != node.uplink]
    ping(node.path, address).ok()
    wait_until(lambda: http_get(node.path, f"http://{address}/", timeout=2).stdout == served, "the container's httpd answering")

    podman.rm(container.name).ok()
    assert not podman.exists(container.name)
    assert host_local_addresses(data_dir, "ref-podman") == []
    assert not has_link(node.path, host_veth)
    assert [link["ifname"] for link in links(node.path)] == ["lo", node.uplink]
