"""Real clients (cnitool, podman) driving the `calico` plugin inside node namespaces.

The same scenarios as test_reference_clients.py, with `calico` (calico-ipam in process, or
host-local by exec) as the main plugin, chained with Debian's portmap and bandwidth: what a runtime
really does to the plugin (libcni's prevResult cache, runtimeConfig from capabilities, VERSION
probes, repeated DEL) and what it leaves in the kernel and in etcd. Pools come from 198.18.0.0/16;
the node's name in Calico's data is the node namespace's name.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.calico_support import assert_datastore_clean, held_addresses
from tests.conftest import BIN_DIR, FABRIC_ADDRESS
from tests.clients.harness import (
    BANDWIDTH,
    PORTMAP,
    SHAPING,
    Node,
    assert_shaped_and_port_mapped,
    assert_shaping_and_port_mapping_gone,
    cnitool,
    cnitool_attachment,
    cnitool_container_id,
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
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

ETCD_ENDPOINT = f"http://{FABRIC_ADDRESS}:2379"  # the session's etcd, reachable from every node


def calico_plugin(node: Node, log_dir: Path, ipam: dict | None = None) -> dict:
    """The `calico` entry of a conflist for a node: calico-ipam (or `ipam`), the session's etcd."""
    return {
        "type": "calico",
        "etcd_endpoints": ETCD_ENDPOINT,
        "nodename": node.name,
        "log_file_path": str(log_dir / "cni.log"),
        "log_level": "debug",
        "ipam": ipam or {"type": "calico-ipam"},
    }


def calico_conflist(name: str, node: Node, log_dir: Path, *chained: dict, ipam: dict | None = None) -> dict:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [calico_plugin(node, log_dir, ipam), *chained]}


def pod_address(result: dict) -> str:
    """The single IPv4 address of a result (a /32 on the container interface)."""
    (ip,) = result["ips"]
    interface = ipaddress.ip_interface(ip["address"])
    assert interface.network.prefixlen == 32, ip
    return str(interface.ip)


def node_routes(node: Node) -> list[dict]:
    return run_in(node.path, ["ip", "-j", "-4", "route", "show"]).json()


def pod_routes(node: Node) -> list[str]:
    """The node's routes into the pool range (one /32 per local pod)."""
    return sorted(r["dst"] for r in node_routes(node) if r["dst"].startswith("198.18."))


def cali_links(node: Node) -> list[str]:
    return [link["ifname"] for link in links(node.path) if link["ifname"].startswith("cali")]


def test_cnitool_calico_portmap_bandwidth(cnitool_bin, store, node, make_netns, netconf_dir, tmp_path):
    """cnitool add/check/del of calico + portmap + bandwidth: the pod gets a pool address, a host
    port on the node reaches the pod's server, shaping is installed, CHECK passes, DEL leaves no
    link, route, endpoint, handle or allocation, and a repeated DEL succeeds."""
    create_pool(store, "clients-pool", "198.18.10.0/24")
    write_conflist(netconf_dir, calico_conflist("calico-chain", node, tmp_path, PORTMAP, BANDWIDTH))
    pod = make_netns()
    ports = [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]
    caps = {"portMappings": ports, "bandwidth": SHAPING}
    common = dict(node=node, netconf_dir=netconf_dir)

    with cnitool_attachment("calico-chain", pod, cap_args=caps, **common) as added:
        result = added.json()
        pod_ip = pod_address(result)
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network("198.18.10.0/24")
        assert ipv4_addresses(pod, "eth0") == [pod_ip]
        # calico's host veth first, then bandwidth's ifb (calico returns prevResult's interfaces).
        host_if = host_interfaces(result)[0]
        assert host_if.startswith("cali") and cali_links(node) == [host_if]
        assert pod_routes(node) == [pod_ip]
        (endpoint,) = store.workload_endpoints()
        assert endpoint.node == node.name and endpoint.container_id == cnitool_container_id(pod)
        assert endpoint.ip_networks == [f"{pod_ip}/32"]
        assert list(held_addresses(store).values()) == [[pod_ip]]
        assert_shaped_and_port_mapped(node, pod, pod_ip, result, tmp_path / "www", "hello from the calico pod\n")

        # portmap 1.1.1 fails CHECK when port mappings are passed (cni-protocol.md): leave them out.
        cnitool("check", "calico-chain", pod, cap_args={"bandwidth": SHAPING}, **common).ok()

        cnitool("del", "calico-chain", pod, cap_args=caps, **common).ok()
        assert_shaping_and_port_mapping_gone(node, "calico-chain", pod, pod_ip)
        assert cali_links(node) == []
        assert pod_routes(node) == []
        assert_datastore_clean(store)

        # DEL again, without libcni's cached result (the spec: it must succeed).
        cnitool("del", "calico-chain", pod, cap_args=caps, **common).ok()
        assert_datastore_clean(store)


def test_cnitool_calico_check_names_what_was_removed(cnitool_bin, store, node, make_netns, netconf_dir, tmp_path):
    """CHECK through cnitool (calico + portmap + bandwidth) passes after ADD; it fails naming the
    default route once that route is removed by hand in the pod, passes again once it is put back,
    and fails naming the address once the pod's address is removed."""
    create_pool(store, "clients-pool", "198.18.11.0/24")
    write_conflist(netconf_dir, calico_conflist("calico-check", node, tmp_path, PORTMAP, BANDWIDTH))
    pod = make_netns()
    caps = {"bandwidth": SHAPING}  # no port mappings: portmap 1.1.1's own CHECK bug
    common = dict(node=node, netconf_dir=netconf_dir, cap_args=caps)

    with cnitool_attachment("calico-check", pod, **common) as added:
        pod_ip = pod_address(added.json())
        cnitool("check", "calico-check", pod, **common).ok()

        run_in(pod, ["ip", "route", "del", "default"]).ok()
        checked = cnitool("check", "calico-check", pod, **common)
        assert checked.rc != 0, checked.describe()
        assert "route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing" in checked.stderr, checked.describe()
        assert "address" not in checked.stderr, f"only the route is missing: {checked.describe()}"

        run_in(pod, ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]).ok()
        cnitool("check", "calico-check", pod, **common).ok()

        run_in(pod, ["ip", "addr", "del", f"{pod_ip}/32", "dev", "eth0"]).ok()
        checked = cnitool("check", "calico-check", pod, **common)
        assert checked.rc != 0, checked.describe()
        # (The kernel drops the pod's routes with its last IPv4 address: those are named too.)
        assert f"address {pod_ip}/32 is missing from eth0" in checked.stderr, checked.describe()

        cnitool("del", "calico-check", pod, **common).ok()
        assert cali_links(node) == [] and pod_routes(node) == []
        assert_datastore_clean(store)


def test_cnitool_two_calico_pods_reach_each_other_and_the_node(cnitool_bin, store, node, make_netns, netconf_dir, tmp_path):
    """Two pods added by cnitool on one node ping each other and the node address, the node pings
    both, and DEL of both leaves nothing."""
    create_pool(store, "clients-pool", "198.18.12.0/24")
    write_conflist(netconf_dir, calico_conflist("calico-pair", node, tmp_path))
    pod_a, pod_b = make_netns(), make_netns()
    common = dict(node=node, netconf_dir=netconf_dir)

    with cnitool_attachment("calico-pair", pod_a, **common) as added_a, cnitool_attachment("calico-pair", pod_b, **common) as added_b:
        ip_a, ip_b = pod_address(added_a.json()), pod_address(added_b.json())
        assert ip_a != ip_b
        assert len(cali_links(node)) == 2 and pod_routes(node) == sorted([ip_a, ip_b])
        assert len(store.workload_endpoints()) == 2
        ping(pod_a, ip_b).ok()
        ping(pod_b, ip_a).ok()
        ping(pod_a, node.address).ok()
        ping(pod_b, node.address).ok()
        ping(node.path, ip_a).ok()
        ping(node.path, ip_b).ok()
        with http_server(pod_b, tmp_path / "www", "pod b\n", port=8080):
            assert http_get(pod_a, f"http://{ip_b}:8080/").ok().stdout == "pod b\n"

        cnitool("del", "calico-pair", pod_a, **common).ok()
        cnitool("del", "calico-pair", pod_b, **common).ok()
        assert cali_links(node) == [] and pod_routes(node) == []
        assert_datastore_clean(store)


def test_podman_container_on_calico_network(podman, store, node, busybox_rootfs, tmp_path):
    """podman (CNI backend) runs a busybox container on a network of type `calico`: the container
    gets an address from the pool, the node pings it and reaches its HTTP server, and `podman rm`
    frees the address and removes the endpoint and the host veth."""
    create_pool(store, "clients-pool", "198.18.13.0/24")
    podman.write_network(calico_conflist("calico-podman", node, tmp_path))
    listed = podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").ok()
    assert "calico-podman calico" in listed.stdout.splitlines(), listed.describe()

    served = "hello from the calico container\n"
    container = podman.run(
        "calico-podman",
        busybox_rootfs,
        ["sh", "-c", f"printf '{served.strip()}\\n' > /www/index.html && exec httpd -f -p 80 -h /www"],
        options=["--tmpfs", "/www"],
    ).ok()
    address = podman.address(container)
    assert ipaddress.ip_address(address) in ipaddress.ip_network("198.18.13.0/24")
    assert list(held_addresses(store).values()) == [[address]]
    (endpoint,) = store.workload_endpoints()
    assert endpoint.node == node.name and endpoint.ip_networks == [f"{address}/32"]
    inside = podman.exec(container.name, "ip", "-4", "-o", "addr", "show", "dev", "eth0").ok()
    assert f"inet {address}/32" in inside.stdout, inside.describe()
    (host_veth,) = cali_links(node)
    assert pod_routes(node) == [address]

    ping(node.path, address).ok()
    wait_until(lambda: http_get(node.path, f"http://{address}/", timeout=2).stdout == served, "the container's httpd answering")
    podman.exec(container.name, "ping", "-c", "1", "-W", "5", node.address).ok()

    podman.rm(container.name).ok()
    assert not podman.exists(container.name)
    assert_datastore_clean(store)
    assert not has_link(node.path, host_veth)
    assert pod_routes(node) == []
    assert [link["ifname"] for link in links(node.path)] == ["lo", node.uplink]


def test_cnitool_calico_with_host_local(cnitool_bin, store, node, make_netns, netconf_dir, tmp_path):
    """`calico` with ipam.type host-local (delegated by exec from CNI_PATH) through cnitool: the pod
    gets host-local's address and is reachable, CHECK passes, calico-ipam holds nothing, and DEL
    frees host-local's address and removes the link, route and endpoint."""
    data_dir = tmp_path / "host-local"
    ipam = {"type": "host-local", "ranges": [[{"subnet": "198.18.14.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(data_dir)}
    write_conflist(netconf_dir, calico_conflist("calico-hl", node, tmp_path, ipam=ipam))
    pod = make_netns()
    common = dict(node=node, netconf_dir=netconf_dir)
    assert not (BIN_DIR / "host-local").exists(), "host-local must come from /usr/lib/cni, by exec"

    with cnitool_attachment("calico-hl", pod, **common) as added:
        pod_ip = pod_address(added.json())
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network("198.18.14.0/24")
        assert host_local_addresses(data_dir, "calico-hl") == [pod_ip]
        assert held_addresses(store) == {} and store.handles() == [], "calico-ipam was not used"
        (endpoint,) = store.workload_endpoints()
        assert endpoint.ip_networks == [f"{pod_ip}/32"]
        assert ipv4_addresses(pod, "eth0") == [pod_ip]
        assert pod_routes(node) == [pod_ip]
        ping(node.path, pod_ip).ok()
        ping(pod, node.address).ok()
        cnitool("check", "calico-hl", pod, **common).ok()

        cnitool("del", "calico-hl", pod, **common).ok()
        assert host_local_addresses(data_dir, "calico-hl") == []
        assert not has_link(pod, "eth0")
        assert cali_links(node) == [] and pod_routes(node) == []
        assert store.workload_endpoints() == []
