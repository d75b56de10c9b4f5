"""calico-node on one node (a namespace on a cluster bridge, as tests/cluster_support.py builds it):
what it guarantees whatever goes wrong.

- A setting or a start-up that cannot work exits 1 with one line saying what to set (no traceback).
- While etcd cannot be reached the socket serves, start-up is retried and reported, nothing is
  written for BIRD and no BIRD is started; SIGTERM ends it at once.
- SIGTERM stops calico-node and never reaches BIRD; the next calico-node adopts that BIRD.
- The routing part: a configuration file changed behind its back is put back; a configuration
  BIRD refuses, a `bird` that cannot be run and a BIRD that stops answering (SIGSTOP) each leave
  routing not ready with the reason while the plugins' socket keeps serving, and start no second
  BIRD.

Every calico-node and BIRD is killed and every namespace removed by the cluster fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import etcd_secure, netns
from tests.cluster_support import Cluster, ClusterNode, processes_naming, wait_for
from tests.conftest import FABRIC_ADDRESS, plugin_path

RUN_TIMEOUT = 30  # a calico-node expected to exit does so well within this


def run_to_exit(node: ClusterNode, **env: str) -> subprocess.CompletedProcess:
    """Run calico-node of `node` in its namespace until it exits by itself."""
    return subprocess.run(
        ["nsenter", f"--net={netns.NETNS_DIR}/{node.ns}", plugin_path("calico-node")],
        env={**node.env(), **env}, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )


def spawn(node: ClusterNode, **env: str) -> None:
    """Start calico-node of `node` without waiting for it to register (ClusterNode.start waits)."""
    node.extra_env.update(env)
    log = open(node.log, "ab")  # noqa: SIM115 - the process keeps it
    node.proc = subprocess.Popen(["nsenter", f"--net={netns.NETNS_DIR}/{node.ns}", plugin_path("calico-node")],
                                 env=node.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()


def probe(node: ClusterNode, *flags: str) -> subprocess.CompletedProcess:
    """`calico-node <probe flags>` of `node` (it reads the run and state directories)."""
    return subprocess.run(
        ["nsenter", f"--net={netns.NETNS_DIR}/{node.ns}", plugin_path("calico-node"), *flags],
        env=node.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )


def routing(node: ClusterNode) -> dict:
    """The routing part's health ({} while nothing answers)."""
    return ((node.health() or {}).get("parts") or {}).get("routing") or {}


def routing_ready(node: ClusterNode) -> bool:
    return routing(node).get("ready") is True


def birds(node: ClusterNode) -> list[int]:
    return processes_naming(str(node.run_dir), "bird")


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1 and one error line holding `words` (log lines below ERROR aside), no traceback."""
    lines = [line for line in proc.stderr.strip().splitlines() if "[WARNING]" not in line]
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def cluster(tmp_path, etcd_endpoint):
    """A cluster bridge on the empty test etcd; every node, BIRD and namespace removed afterwards."""
    made = Cluster(tmp_path / "cluster")
    try:
        # A bridge takes the lowest MAC of its ports unless given one, and changes it when a port with
        # a lower MAC joins: a node that resolved the gateway before would be cut off from etcd.
        netns.ip("link", "set", made.bridge, "address", f"02:00:c6:13:c8:{made.id % 256:02x}")
        yield made
    finally:
        made.remove()


@pytest.fixture
def node(cluster: Cluster) -> ClusterNode:
    """One node namespace on the cluster bridge, calico-node not started."""
    return cluster.add_node(start=False)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DATASTORE_TYPE": "kubernetes"}, ("calico-node: ", "DATASTORE_TYPE=kubernetes", "etcdv3")),
        ({"ETCD_ENDPOINTS": ""}, ("calico-node: ", "ETCD_ENDPOINTS")),
        ({"IP": "bogus"}, ("calico-node: ", "IP='bogus'")),
        ({"CALICO_NETWORKING_BACKEND": "quagga"}, ("calico-node: ", "CALICO_NETWORKING_BACKEND='quagga'", "bird")),
    ],
)
def test_a_setting_that_cannot_work_exits_1_with_one_line(node, env, words):
    proc = run_to_exit(node, **env)
    assert_one_line_error(proc, *words)
    assert not node.run_dir.exists() and not node.state_dir.exists()  # nothing was set up


def test_an_unusable_run_directory_exits_1_with_one_line(node):
    """A socket path longer than a Unix socket can hold (107 bytes)."""
    long_dir = node.directory / ("r" * 100)
    proc = run_to_exit(node, CALICO_RUN_DIR=str(long_dir))
    assert_one_line_error(proc, f"cannot serve the plugins on {long_dir}/cni.sock", "CALICO_RUN_DIR")


def test_unusable_etcd_credentials_exit_1_with_one_line(node, tmp_path):
    """Not "etcd is unreachable, try again": a file that must change. Start-up stops."""
    missing = tmp_path / "no-such-ca.pem"
    proc = run_to_exit(node, ETCD_ENDPOINTS=f"https://{FABRIC_ADDRESS}:1", ETCD_CA_CERT_FILE=str(missing))
    assert_one_line_error(proc, "[ERROR]", "calico-node: start-up failed: ", "ETCD_CA_CERT_FILE", str(missing))
    assert not os.path.exists(node.socket)


def test_a_start_up_error_exits_1_with_one_line_and_removes_the_socket(cluster):
    """An address another node holds: Calico's start-up refuses it."""
    first = cluster.add_node()
    second = cluster.add_node(start=False)
    proc = run_to_exit(second, IP=f"{first.ipv4}/24")
    assert_one_line_error(proc, "[ERROR]", "calico-node: start-up failed: ", first.ipv4, first.nodename, "DISABLE_NODE_IP_CHECK")
    assert "calico-node: calico-node" not in proc.stderr
    assert not os.path.exists(second.socket)
    assert not (second.state_dir / "bird.cfg").exists() and not birds(second)


def test_while_etcd_cannot_be_reached_the_socket_serves_and_nothing_is_started(node):
    spawn(node, ETCD_ENDPOINTS=f"http://{FABRIC_ADDRESS}:1")  # nothing listens there
    proc = node.proc
    startup = wait_for("start-up to report the unreachable etcd",
                       lambda: ((node.health() or {}).get("parts") or {}).get("startup", {}).get("last_error"), 15)
    health = node.health()
    assert health["registered"] is False and health["in_sync"] is False
    assert f"{FABRIC_ADDRESS}:1" in startup and "unreachable" in startup
    assert health["parts"]["startup"]["alive"] is True and health["parts"]["startup"]["ready"] is False
    felix = probe(node, "-felix-ready")
    assert felix.returncode == 1 and "startup is not ready" in felix.stderr and "unreachable" in felix.stderr, felix.stderr
    # Nothing for BIRD before start-up and the first list (design rule 27).
    assert not (node.state_dir / "bird.cfg").exists() and not birds(node)
    proc.terminate()
    assert proc.wait(10) == 0
    assert not os.path.exists(node.socket)
    node.proc = None


PRIVATE_PORT = 23900  # the private etcd of the test that starts calico-node before it (peer port one above)


@pytest.fixture
def private_etcd(tmp_path):
    """An etcd of the test's own on the fabric address, which it may stop and start."""
    made = etcd_secure.start_single(FABRIC_ADDRESS, PRIVATE_PORT, PRIVATE_PORT + 1, str(tmp_path))
    try:
        yield made
    finally:
        made.stop()


def test_start_up_waits_for_etcd_and_goes_on_when_it_comes(node, private_etcd):
    """A node booting before its datastore: calico-node retries start-up (0.5 s doubling to
    10 s) and, once etcd answers, registers, lists and starts BIRD."""
    private_etcd.members[0].stop()
    spawn(node, ETCD_ENDPOINTS=private_etcd.endpoint)
    wait_for("start-up to fail twice", lambda: ((node.health() or {}).get("parts") or {}).get("startup", {}).get("restarts", 0) >= 2, 15)
    assert not (node.state_dir / "bird.cfg").exists() and not birds(node)
    private_etcd.members[0].start()
    private_etcd.wait_healthy()
    wait_for("registration once etcd is back", lambda: (node.health() or {}).get("registered"), 30)
    wait_for("routing ready", lambda: routing_ready(node), 15)
    assert (node.state_dir / "nodename").read_text() == node.nodename and len(birds(node)) == 1


@pytest.fixture
def routed(cluster: Cluster) -> ClusterNode:
    """A registered node whose calico-node runs BIRD with its configuration loaded."""
    node = cluster.add_node()
    wait_for("routing ready", lambda: routing_ready(node), 15)
    assert len(birds(node)) == 1
    return node


def test_sigterm_stops_calico_node_and_never_reaches_bird(routed):
    bird = routed.bird_pid()
    assert bird is not None
    os.killpg(routed.proc.pid, signal.SIGTERM)  # the daemon's whole process group, as a supervisor may
    assert routed.proc.wait(15) == 0
    routed.proc = None
    assert not os.path.exists(routed.socket)
    assert birds(routed) == [bird] and routed.bird_pid() == bird
    assert "Kernel" in routed.birdc("show", "protocols")  # BIRD still answers
    routed.start()  # a new calico-node adopts the running BIRD
    wait_for("routing ready again", lambda: routing_ready(routed), 15)
    assert birds(routed) == [bird]


def test_a_configuration_changed_behind_its_back_is_put_back(routed):
    config = routed.state_dir / "bird.cfg"
    rendered = config.read_text()
    bird = routed.bird_pid()
    config.write_text("this is not a BIRD configuration\n")
    wait_for("the rendered configuration back in place", lambda: config.read_text() == rendered, 10)
    assert birds(routed) == [bird]
    assert not (routed.state_dir / "bird.cfg.rejected").exists()


def fake_bird(directory: Path, script: str) -> str:
    """A directory holding an executable `bird` with `script`, to put first on calico-node's PATH."""
    directory.mkdir()
    path = directory / "bird"
    path.write_text(script)
    path.chmod(0o755)
    return f"{directory}:{os.environ.get('PATH', '')}"


def test_a_configuration_bird_refuses_leaves_routing_not_ready_and_the_socket_serving(cluster, tmp_path):
    """`bird -p` refuses the rendered text: it is never installed, no BIRD is started, routing
    reports BIRD's error, and the plugins' socket serves on."""
    path = fake_bird(tmp_path / "fake", '#!/bin/sh\n[ "$1" = -p ] && { echo "bird: $3:7:3 syntax error, unexpected CF_SYM_UNDEFINED" >&2; exit 1; }\nexec /usr/sbin/bird "$@"\n')
    node = cluster.add_node(start=False)
    node.start(PATH=path)
    state = wait_for("routing to report the refusal", lambda: routing(node).get("detail") if "syntax error" in (routing(node).get("detail") or "") else None, 15)
    assert "bird.cfg.rejected:7:3 syntax error" in state
    part = routing(node)
    assert part["alive"] is True and part["ready"] is False and part["restarts"] == 0
    assert not (node.state_dir / "bird.cfg").exists() and (node.state_dir / "bird.cfg.rejected").exists()
    assert not birds(node)
    felix = probe(node, "-felix-ready")
    assert felix.returncode == 1 and "routing is not ready" in felix.stderr and "syntax error" in felix.stderr, felix.stderr
    assert node.health()["status"] == "ok" and node.proc.poll() is None


def test_a_bird_that_cannot_be_run_is_reported(cluster, tmp_path):
    """A `bird` whose interpreter is missing stands for a broken or missing BIRD installation."""
    path = fake_bird(tmp_path / "broken", "#!/nonexistent/interpreter\n")
    node = cluster.add_node(start=False)
    node.start(PATH=path)
    detail = wait_for("routing to report that bird cannot be run", lambda: routing(node).get("detail") if "cannot run" in (routing(node).get("detail") or "") else None, 15)
    assert str(tmp_path / "broken" / "bird") in detail and "bird2" in detail
    part = routing(node)
    assert part["alive"] is True and part["ready"] is False
    assert not (node.state_dir / "bird.cfg.rejected").exists()  # nothing was refused: nothing was checked
    assert node.proc.poll() is None and node.health()["status"] == "ok"


def test_a_hung_bird_is_reported_and_never_replaced(routed):
    """BIRD stopped (SIGSTOP: its socket accepts, nothing answers): every call to it has a
    deadline, so routing goes on reporting instead of hanging, and no second BIRD is started."""
    bird = routed.bird_pid()
    os.kill(bird, signal.SIGSTOP)
    try:
        detail = wait_for("routing to report the silent BIRD", lambda: routing(routed).get("detail") if not routing_ready(routed) else None, 15)
        assert "did not answer" in detail and str(routed.run_dir / "bird.ctl") in detail
        assert birds(routed) == [bird] and routed.proc.poll() is None
    finally:
        os.kill(bird, signal.SIGCONT)
    wait_for("routing ready once BIRD answers again", lambda: routing_ready(routed), 15)
    assert birds(routed) == [bird]


def test_sigterm_while_bird_hangs_still_stops_calico_node(routed):
    bird = routed.bird_pid()
    os.kill(bird, signal.SIGSTOP)
    try:
        wait_for("routing to notice", lambda: not routing_ready(routed), 15)
        routed.proc.terminate()
        assert routed.proc.wait(15) == 0
        routed.proc = None
    finally:
        os.kill(bird, signal.SIGCONT)
    assert birds(routed) == [bird]


def test_the_felix_probes_pass_on_an_idle_node(routed):
    """Nothing changes in the datastore, yet every part keeps having good passes: the syncer's
    are etcd's answers to its progress requests (every 10 s), the routing controller's its
    periodic passes, like the encapsulation, tunnel-address and rules controllers' (with nothing to
    program). -felix-live with a 15 s threshold 20 s after start sees them all."""
    wait_for("20 s of uptime", lambda: (routed.health() or {}).get("uptime_s", 0) >= 20, 40, 1)
    ready = probe(routed, "-felix-ready")
    assert (ready.returncode, ready.stderr) == (0, "")
    live = probe(routed, "-felix-live", "-threshold-time", "15s")
    assert (live.returncode, live.stderr) == (0, ""), live.stderr
    parts = routed.health()["parts"]
    assert set(parts) == {"syncer", "routing", "tunnel-addresses", "encapsulation", "rules"} and all(p["ready"] and p["alive"] and p["restarts"] == 0 for p in parts.values()), parts
    assert parts["syncer"]["detail"].startswith("watching from revision ")
