"""scripts/demo.sh, the README's first command, run end to end from the test's fabric namespace.

The demo makes its own namespaces (calico-demo-<its pid>-...: a fabric of its own with etcd and a
bridge, three nodes, a pod per node), so it collides with nothing of the session (whose etcd listens
on 198.19.0.1:2379 in the session's fabric). Every process it starts inherits a marker in its
environment: whatever still carries the marker after the demo exited is a leak (an etcd, a
calico-node or a BIRD left running, say); so is any process whose command line names the demo's
temporary directory. Its pip installs come from local wheels, as the session's fabric has no route
to PyPI (tests/clients/wheels.py).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests import netns
from tests.clients.conftest import REPO
from tests.clients.harness import run_in, wait_until
from tests.clients.wheels import download_wheels, offline_pip_env

DEMO = REPO / "scripts" / "demo.sh"
MARKER = "CALICO_DEMO_TEST_MARKER"


@pytest.fixture(scope="module")
def wheelhouse(fabric, tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo-wheels")
    try:
        download_wheels(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose environment carries MARKER=marker."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry), cmdline.strip()))
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


def processes_naming(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry), cmdline.strip()))
    return found


def demo_namespaces(pid: int) -> list[str]:
    if not os.path.isdir(netns.NETNS_DIR):
        return []
    return sorted(n for n in os.listdir(netns.NETNS_DIR) if re.fullmatch(rf"calico-demo-{pid}(-.*)?", n))


def demo_temp_dirs(pid: int) -> list[str]:
    return sorted(glob.glob(f"/tmp/calico-demo-{pid}.*"))


def links_here() -> list[str]:
    """The interfaces of the namespace the test runs in (the fabric)."""
    return sorted(link["ifname"] for link in run_in(None, ["ip", "-j", "link", "show"]).json())


class Demo:
    """scripts/demo.sh started in its own process group with a marked environment."""

    def __init__(self, wheelhouse: Path, workdir: Path, *args: str):
        self.marker = uuid.uuid4().hex
        self.output = workdir / "demo.out"
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            MARKER: self.marker,
            **offline_pip_env(wheelhouse),
        }
        self.out = self.output.open("w")
        self.proc = subprocess.Popen(
            [str(DEMO), *args],
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(workdir),
            start_new_session=True,
        )

    @property
    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout)

    def leaks(self) -> dict[str, list]:
        """What the demo left behind: processes, namespaces, temporary directories."""
        found = {
            "processes": marked_processes(self.marker),
            "processes naming its directory": processes_naming(f"/tmp/calico-demo-{self.proc.pid}."),
            "namespaces": demo_namespaces(self.proc.pid),
            "temp dirs": demo_temp_dirs(self.proc.pid),
        }
        return {k: v for k, v in found.items() if v}

    def remove_leftovers(self) -> None:
        """Stop the demo and remove whatever it left (the test has already failed if anything)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid, _ in [*marked_processes(self.marker), *processes_naming(f"/tmp/calico-demo-{self.proc.pid}.")]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in demo_namespaces(self.proc.pid):
            netns.delete(name)
        for path in demo_temp_dirs(self.proc.pid):
            shutil.rmtree(path, ignore_errors=True)
        self.out.close()


@pytest.fixture
def start_demo(wheelhouse, tmp_path):
    """Factory: `start_demo(*args) -> Demo`; whatever a demo leaves is removed afterwards."""
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(wheelhouse, tmp_path, *args)
        started.append(demo)
        return demo

    try:
        yield start
    finally:
        for demo in started:
            demo.remove_leftovers()


def test_demo_runs_end_to_end_and_leaves_nothing(start_demo):
    """The demo succeeds from the fabric namespace: three nodes each register (calicoctl get nodes),
    node1's `calicoctl node status` shows its two mesh peers Established, node1 has a BIRD route
    to a block of each other node via that node's address, each of the three pods has a pool
    address, and each of the three pod-to-pod pings across nodes gets a reply. Network policy:
    node1 gets no reply from pod3 (the network's profile admits only the network's pods) until the
    GlobalNetworkPolicy allow-nodes is applied, then one; with the NetworkPolicy deny-client pod1
    gets no reply from pod2 while pod3 does, `calicoctl node policy` lists for pod2's ingress
    deny-client (order 100) before allow-nodes (1000), the tier's drop, then the profile calico, and
    pod1 gets a reply again once deny-client is deleted. The fabric answers a pod only
    once its pool has natOutgoing; with the pool switched to VXLAN each node has a tunnel address,
    node1 routes the other blocks through vxlan.calico, the MTU file says 1450, and the pods still
    reach each other. It leaves no namespace, process (etcd, calico-node, BIRD), temporary
    directory or interface behind."""
    links_before = links_here()
    demo = start_demo()
    rc = demo.wait()
    output = demo.text
    assert rc == 0, output
    assert "Traceback" not in output, output
    for n in (1, 2, 3):
        assert re.search(rf"^\s+node{n}\s+\(64512\)\s+198\.19\.1\.1{n}/24\s*$", output, re.M), f"node{n} registered:\n{output}"
    peers = re.findall(r"\| (198\.19\.1\.1[23])\s+\| node-to-node mesh \| up\s+\| [^|]+\| Established \|", output)
    assert sorted(peers) == ["198.19.1.12", "198.19.1.13"], f"node1's two mesh sessions:\n{output}"
    bird_routes = re.findall(r"^\s+198\.18\.0\.\d+/28 via (198\.19\.1\.1[23]) dev uplink", output, re.M)
    assert sorted(bird_routes) == ["198.19.1.12", "198.19.1.13"], f"a BIRD route to each other node's block:\n{output}"
    pods = set(re.findall(rf"calico-demo-{demo.proc.pid}-pod\d+: (198\.18\.\d+\.\d+)", output))
    assert len(pods) == 3, f"three pods with pool addresses:\n{output}"
    replies = re.findall(r"^\s+(.+ -> .+) \(198\.[0-9.]+\): reply$", output, re.M)
    assert len(replies) == 10, f"a reply to each ping (3 pod to pod, 4 under policy, 1 masqueraded, 2 over VXLAN):\n{output}"
    assert "NO REPLY" not in output and "A REPLY, although policy should drop it" not in output, output
    # Network policy: what is dropped, in order with what answers.
    refused = re.findall(r"^\s+(.+ -> .+) \(198\.[0-9.]+\): no reply, dropped by policy as expected$", output, re.M)
    assert refused == ["node1 -> pod3 on node3, from outside the network", "pod1 on node1 -> pod2 on node2, denied by deny-client"], output
    policy_part = output[output.index("== Network policy") : output.index("== NAT outgoing")]
    steps = [
        "node1 -> pod3 on node3, from outside the network (",
        "Successfully applied 1 'GlobalNetworkPolicy' resource(s)",
        "node1 -> pod3 on node3, allowed from the nodes' subnet (",
        "Successfully set label app on workloadendpoint node2-",
        "Successfully applied 1 'NetworkPolicy' resource(s)",
        "pod1 on node1 -> pod2 on node2, denied by deny-client (",
        "pod3 on node3 -> pod2 on node2, not a client (",
        "Successfully deleted 1 'NetworkPolicy' resource(s)",
        "pod1 on node1 -> pod2 on node2, deny-client deleted (",
    ]
    positions = [policy_part.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), f"the policy steps in order {list(zip(steps, positions))}:\n{output}"
    # calicoctl node policy for pod2: its labels, then its ingress in evaluation order.
    assert re.search(r"^\s+app=db$", policy_part, re.M) and re.search(r"^\s+calico=\s+\(from profile calico\)$", policy_part, re.M), output
    ingress = policy_part[policy_part.index("Ingress (to the endpoint") : policy_part.index("Egress (from the endpoint")]
    order = [
        "tier default",
        "1. NetworkPolicy default/deny-client, order 100",
        "2. GlobalNetworkPolicy allow-nodes, order 1000",
        "end of tier default: drop",
        "1. calico  (chain pri-calico)",
        "finally: drop",
    ]
    positions = [ingress.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), f"pod2's ingress in order {list(zip(order, positions))}:\n{output}"
    # NAT outgoing: no reply from the fabric before natOutgoing, one after.
    assert "pod1 -> the fabric: no reply (natOutgoing is off" in output, output
    assert re.search(r"pod1 -> the fabric, masqueraded .*\(198\.19\.1\.1\): reply", output), output
    assert "ip saddr @masq-ipam-pools ip daddr != @all-ipam-pools masquerade" in output, output
    # VXLAN: each node's tunnel address from the pool, node1's routes to the other blocks through vxlan.calico.
    tunnels = re.findall(r"^\s+node[123]: (198\.18\.0\.\d+)$", output, re.M)
    assert len(set(tunnels)) == 3, f"a tunnel address per node:\n{output}"
    vxlan_routes = re.findall(r"^\s+198\.18\.0\.\d+/28 via (198\.18\.0\.\d+) dev vxlan\.calico metric 2048 onlink", output, re.M)
    assert len(vxlan_routes) == 2 and set(vxlan_routes) <= set(tunnels), f"node1 routes the other blocks via their tunnel addresses:\n{output}"
    assert "the pod MTU calico-node wrote for new pods: 1450" in output, output
    assert demo.leaks() == {}, output
    assert links_here() == links_before, "the demo changed the namespace it was started in"


def test_interrupted_demo_leaves_nothing(start_demo):
    """Ctrl-C (SIGINT to the demo's process group) once the first pod is up: the demo says it is
    cleaning up, exits non-zero, and leaves no namespace, process, temporary directory or interface
    behind."""
    links_before = links_here()
    demo = start_demo()

    def first_pod_added():
        if demo.proc.poll() is not None:
            raise AssertionError(f"the demo exited {demo.proc.returncode} before adding a pod:\n{demo.text}")
        return re.search(rf"calico-demo-{demo.proc.pid}-pod1: 198\.18\.", demo.text)

    wait_until(first_pod_added, "the demo's first pod", attempts=6000)
    os.killpg(demo.proc.pid, signal.SIGINT)
    rc = demo.wait()
    output = demo.text
    assert rc != 0, output
    assert "interrupted: cleaning up" in output, output
    assert demo.leaks() == {}, output
    assert links_here() == links_before, "the demo changed the namespace it was started in"
