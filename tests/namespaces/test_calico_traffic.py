"""Traffic through a node wired by `calico`: pods reach each other and the node, and a pod's TCP
server is reachable (ICMP and TCP, IPv4 and IPv6)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import netns
from tests.calico_support import in_ns, ok, pod_env, run_calico
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

BUSYBOX = "/usr/bin/busybox"


def ping(ns: str, address: str) -> subprocess.CompletedProcess:
    return in_ns(ns, "ping", "-c", "1", "-W", "2", address, check=False)


def addresses(result: dict, version: int) -> list[str]:
    return [i["address"].split("/")[0] for i in result["ips"] if (":" in i["address"]) == (version == 6)]


@pytest.fixture
def http_server(tmp_path):
    """Start busybox httpd inside a namespace; every server is killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(ns: str, port: int = 8080) -> None:
        root = tmp_path / f"www-{len(procs)}"
        root.mkdir()
        (root / "index.html").write_text(f"hello from {ns}\n")
        procs.append(
            subprocess.Popen(
                ["nsenter", f"--net={netns.NETNS_DIR}/{ns}", BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def fetch(ns: str, url: str, attempts: int = 50) -> str:
    """GET a URL from inside a namespace, retrying while the server starts."""
    last = None
    for _ in range(attempts):
        # (busybox 1.35's wget crashes with -T: bound it with timeout(1) instead)
        last = in_ns(ns, "timeout", "3", BUSYBOX, "wget", "-q", "-O", "-", url, check=False)
        if last.returncode == 0:
            return last.stdout
        time.sleep(0.1)
    raise AssertionError(f"GET {url} from {ns} failed (rc {last.returncode}): {last.stdout} {last.stderr}")


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_pods_reach_each_other_and_the_node(dual, store, node, pod, calico_conf, http_server):
    create_pool(store, "v4", "198.18.1.0/24", 26)
    create_pool(store, "v6", "fd00:198:18:1::/112", 122)
    conf = calico_conf(ipam={"assign_ipv6": "true"} if dual else {})
    a, b = pod(), pod()
    ra = ok(run_calico(node, "ADD", conf, pod_env(a)))
    rb = ok(run_calico(node, "ADD", conf, pod_env(b)))

    for src, dst in ((a, rb), (b, ra)):
        for address in addresses(dst, 4):
            assert ping(src, address).returncode == 0, f"{src} cannot ping {address}"
        assert ping(src, node.address).returncode == 0, f"{src} cannot ping the node {node.address}"
    for address in addresses(ra, 4):
        assert in_ns(node.name, "ping", "-c", "1", "-W", "2", address, check=False).returncode == 0, "the node cannot ping a pod"

    http_server(b)
    for address in addresses(rb, 4):
        assert fetch(a, f"http://{address}:8080/") == f"hello from {b}\n"
    if dual:
        for src, dst in ((a, rb), (b, ra)):
            for address in addresses(dst, 6):
                assert ping(src, address).returncode == 0, f"{src} cannot ping {address}"
        for address in addresses(rb, 6):
            assert fetch(a, f"http://[{address}]:8080/") == f"hello from {b}\n"


def test_deleted_pod_is_unreachable(store, node, pod, calico_conf):
    """After DEL the address no longer answers (the node has no route to it)."""
    create_pool(store, "v4", "198.18.2.0/24", 26)
    conf = calico_conf()
    a, b = pod(), pod()
    ok(run_calico(node, "ADD", conf, pod_env(a)))
    rb = ok(run_calico(node, "ADD", conf, pod_env(b)))
    target = addresses(rb, 4)[0]
    assert ping(a, target).returncode == 0
    ok(run_calico(node, "DEL", conf, pod_env(b)))
    assert ping(a, target).returncode != 0


def test_ipv6_gateway_is_the_host_ends_actual_link_local(store, node, pod, calico_conf):
    """With addr_gen_mode 3 (random) on the node, the host end's link-local is not
    fe80::ecee:eeff:feee:eeee; the container's default route must use the one it really has."""
    from tests.calico_support import ip_json

    create_pool(store, "v6", "fd00:198:18:7::/112", 122)
    in_ns(node.name, "sh", "-c", "echo 3 > /proc/sys/net/ipv6/conf/default/addr_gen_mode")
    conf = calico_conf(ipam={"assign_ipv4": "false", "assign_ipv6": "true"})
    a, b = pod(), pod()
    ra = ok(run_calico(node, "ADD", conf, pod_env(a)))
    rb = ok(run_calico(node, "ADD", conf, pod_env(b)))
    host = ra["interfaces"][0]["name"]
    lladdr = [x["local"] for x in ip_json(node.name, "-6", "addr", "show", "dev", host)[0]["addr_info"] if x["scope"] == "link"]
    assert lladdr and lladdr[0] != "fe80::ecee:eeff:feee:eeee"
    gateways = [r["gateway"] for r in ip_json(a, "-6", "route", "show", "default")]
    assert gateways == lladdr[:1]
    for address in addresses(rb, 6):
        assert ping(a, address).returncode == 0, f"{a} cannot ping {address}"
    ok(run_calico(node, "CHECK", {**conf, "prevResult": ra}, pod_env(a)))
