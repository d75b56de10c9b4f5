"""dataplane.bird against real BIRD 2 daemons: two node namespaces joined by a veth pair, each with
a BIRD (configuration written here by hand: a static blackhole /26 from 198.18.x and one
`Mesh_<peer>` BGP session per family, named as Calico names them). Start, Established, show
protocols, configure after a change, a refused configuration, graceful restart, adopting a running
BIRD, BIRD surviving its starter's process group, and `calicoctl node status` run in a node.

Every BIRD is killed (by its pid file, and by any process whose command line names this test's
directory) and both namespaces removed, also when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from calico_cni.dataplane.bird import Bird, BirdError, calico_peers
from calico_cni.node import probes
from tests import netns
from tests.conftest import BIN_DIR

SUBNET = "198.19.240"
SUBNET6 = "fd00:198:19:240"
ESTABLISHED_WITHIN = 15.0


def config(me: int, peer: int, extra: str = "") -> str:
    """Node `me`'s BIRD 2 configuration: its block 198.18.<me>.0/26 (and fd00:198:18:<me>::/122)
    as static blackholes, exported over one iBGP session per family to node `peer`, and the
    peer's routes programmed into the kernel."""
    return f"""\
router id {SUBNET}.{me};
protocol device {{ scan time 2; }}
protocol direct {{ ipv4; ipv6; interface "*"; }}
protocol kernel {{ ipv4 {{ import all; export where source ~ [RTS_BGP, RTS_STATIC]; }}; learn; persist; scan time 2; graceful restart; merge paths on; }}
protocol kernel {{ ipv6 {{ import all; export where source ~ [RTS_BGP, RTS_STATIC]; }}; learn; persist; scan time 2; graceful restart; merge paths on; }}
protocol static {{ ipv4 {{ import all; export none; }}; route 198.18.{me}.0/26 blackhole;{extra} }}
protocol static {{ ipv6 {{ import all; export none; }}; route fd00:198:18:{me}::/122 blackhole; }}
template bgp node4 {{
  local as 64512;
  ipv4 {{ import all; export where source = RTS_STATIC; gateway recursive; add paths on; }};
  graceful restart; connect delay time 1; connect retry time 2; error wait time 1,5;
}}
template bgp node6 {{
  local as 64512;
  ipv6 {{ import all; export where source = RTS_STATIC; gateway recursive; add paths on; }};
  graceful restart; connect delay time 1; connect retry time 2; error wait time 1,5;
}}
protocol bgp Mesh_198_19_240_{peer} from node4 {{ neighbor {SUBNET}.{peer} as 64512; source address {SUBNET}.{me}; }}
protocol bgp Mesh_fd00_198_19_240__{peer} from node6 {{ neighbor {SUBNET6}::{peer} as 64512; source address {SUBNET6}::{me}; }}
"""


@dataclass
class Node:
    n: int
    peer: int
    ns: str
    directory: str
    bird: Bird

    @property
    def netns_path(self) -> str:
        return f"{netns.NETNS_DIR}/{self.ns}"

    def routes(self, version: int = 4) -> list[str]:
        out = netns.ip("-n", self.ns, f"-{version}", "route", "show", "proto", "bird").stdout
        return [line.strip() for line in out.splitlines()]

    def mesh(self, version: int = 4):
        """This node's one Calico peer of the family (from show protocols)."""
        (peer,) = calico_peers(self.bird.show_protocols(), version)
        return peer


def wait_for(check, what: str, timeout: float = ESTABLISHED_WITHIN):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


def established(node: Node) -> bool:
    try:
        return all(p.established for p in calico_peers(node.bird.show_protocols())) and len(calico_peers(node.bird.show_protocols())) == 2
    except BirdError:
        return False


def bird_pids(directory: str) -> list[int]:
    """Every running process whose command line names `directory` (our BIRDs)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[-1].split()[:1] == [b"Z"]
        except OSError:
            continue
        if not zombie and os.path.basename(argv[0]) == b"bird" and any(directory.encode() in a for a in argv):
            pids.append(int(pid))
    return pids


@pytest.fixture
def nodes():
    """Two node namespaces joined by a veth pair (198.19.240.1/24 and .2, fd00:198:19:240::1/64
    and ::2), each with its BIRD's configuration installed (not started)."""
    directory = tempfile.mkdtemp(prefix="bird-")  # short: a Unix socket path has at most 107 bytes
    made: list[Node] = []
    try:
        for n, peer in ((1, 2), (2, 1)):
            ns = netns.add(f"{netns.PREFIX}bird{n}-{os.getpid()}")
            home = os.path.join(directory, f"n{n}")
            made.append(Node(n, peer, ns, home, Bird(f"{home}/state/bird.cfg", f"{home}/run/bird.ctl", f"{home}/run/bird.pid", netns=f"{netns.NETNS_DIR}/{ns}")))
        a, b = made
        netns.ip("-n", a.ns, "link", "add", "peer2", "type", "veth", "peer", "name", "peer1", "netns", b.ns)
        for node, link in ((a, "peer2"), (b, "peer1")):
            netns.ip("-n", node.ns, "addr", "add", f"{SUBNET}.{node.n}/24", "dev", link)
            netns.ip("-n", node.ns, "addr", "add", f"{SUBNET6}::{node.n}/64", "dev", link, "nodad")
            netns.ip("-n", node.ns, "link", "set", link, "up")
            assert node.bird.install(config(node.n, node.peer)) is None
        yield a, b
    finally:
        for node in made:
            pid = node.bird.pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        for pid in bird_pids(directory):
            os.kill(pid, signal.SIGKILL)
        for node in made:
            netns.delete(node.ns)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def running(nodes):
    """Both BIRDs started and their sessions Established."""
    a, b = nodes
    assert a.bird.start() is True and b.bird.start() is True
    wait_for(lambda: established(a) and established(b), "both BGP sessions Established")
    return a, b


def test_two_birds_reach_established_and_install_each_others_blocks(running):
    a, b = running
    rows = {r.name: r for r in a.bird.show_protocols()}
    assert rows["Mesh_198_19_240_2"].proto == "BGP" and rows["Mesh_198_19_240_2"].state == "up"
    assert rows["Mesh_198_19_240_2"].info == "Established" and rows["Mesh_fd00_198_19_240__2"].info == "Established"
    assert {r.proto for r in rows.values()} >= {"Device", "Direct", "Kernel", "Static", "BGP"}
    assert (a.mesh(4).address, a.mesh(6).address) == ("198.19.240.2", "fd00:198:19:240::2")
    # The peer's block, as a kernel route BIRD owns; its own block a blackhole.
    wait_for(lambda: "198.18.2.0/26 via 198.19.240.2 dev peer2 metric 32" in a.routes(), f"node 1 routes 198.18.2.0/26: {a.routes()}", 10)
    wait_for(lambda: any(r.startswith("fd00:198:18:1::/122 via fd00:198:19:240::1 dev peer1") for r in b.routes(6)), f"node 2 routes fd00:198:18:1::/122: {b.routes(6)}", 10)
    assert "blackhole 198.18.1.0/26 metric 32" in a.routes()
    assert a.bird.pid() in bird_pids(a.directory) and a.bird.running()


def test_configure_loads_a_changed_configuration_without_restarting_bird(running):
    a, b = running
    pid, since = a.bird.pid(), a.mesh().protocol.since
    assert a.bird.install(config(1, 2, extra=" route 198.18.1.64/26 blackhole;")) is None
    assert a.bird.configure() is None
    wait_for(lambda: any(r.startswith("198.18.1.64/26 via 198.19.240.1") for r in b.routes()), f"node 2 learns 198.18.1.64/26: {b.routes()}", 10)
    # Reloaded, not restarted: same process, the session was never reset.
    assert a.bird.pid() == pid and a.mesh().protocol.since == since and a.mesh().established


def test_install_refuses_a_bad_configuration_and_leaves_the_file_and_bird_alone(running):
    a, _ = running
    with open(a.bird.config, "rb") as f:
        before = f.read()
    inode = os.stat(a.bird.config).st_ino
    bad = config(1, 2).replace("merge paths on;", 'merge paths on; krt_tunnel = "tunl0";', 1)
    problem = a.bird.install(bad)
    assert problem is not None and "syntax error" in problem
    assert f"{a.bird.config}.rejected:4:" in problem  # the line BIRD names (the first kernel protocol), in the kept copy
    with open(a.bird.config, "rb") as f:
        assert f.read() == before
    assert os.stat(a.bird.config).st_ino == inode
    with open(f"{a.bird.config}.rejected") as f:
        assert f.read() == bad
    assert not [name for name in os.listdir(os.path.dirname(a.bird.config)) if name.startswith(".bird.cfg.")]  # no temporary file left
    assert a.bird.check(a.bird.config) is None
    assert a.bird.configure() is None and a.mesh().established


def test_configure_reports_birds_error(running):
    """A file changed behind install()'s back: BIRD's refusal (code, file, line) is the answer, and
    the running configuration is kept."""
    a, _ = running
    with open(a.bird.config, "a") as f:
        f.write("protocol nonsense {}\n")
    problem = a.bird.configure()
    assert problem is not None and problem.startswith("8002 ") and f"{a.bird.config}:" in problem
    assert a.mesh().established


def test_graceful_restart_keeps_every_route_and_a_restart_recovers(running):
    a, b = running
    routes_a, routes_b = a.routes(), b.routes()
    assert "198.18.2.0/26 via 198.19.240.2 dev peer2 metric 32" in routes_a
    assert a.bird.graceful_restart() is None
    assert a.bird.pid() is None and not a.bird.running() and not bird_pids(a.directory)
    # BIRD left its kernel routes; the peer keeps node 1's block as stale while the session is down.
    assert a.routes() == routes_a
    wait_for(lambda: not b.mesh().established, "node 2 sees the session down", 10)
    assert b.routes() == routes_b
    # Started again (-R: graceful-restart recovery), the sessions come back and the routes stay.
    assert a.bird.start() is True
    wait_for(lambda: established(a) and established(b), "sessions Established again")
    wait_for(lambda: a.routes() == routes_a, f"node 1's routes after recovery: {a.routes()}", 10)
    assert b.routes() == routes_b


def test_start_adopts_a_running_bird(running):
    a, _ = running
    pid = a.bird.pid()
    assert a.bird.start() is False
    assert a.bird.pid() == pid and bird_pids(a.directory) == [pid]


def test_start_over_a_stale_socket_and_pid_file(nodes):
    """What a BIRD killed with SIGKILL leaves: its socket file (nobody listens) and a pid file
    whose pid now names another process. Neither is taken for a running BIRD, and BIRD replaces both."""
    a, _ = nodes
    os.makedirs(os.path.dirname(a.bird.socket))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(a.bird.socket)
    stale.close()
    with open(a.bird.pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")  # alive, but not a bird
    assert a.bird.pid() is None and not a.bird.running()
    assert a.bird.start() is True
    pid = a.bird.pid()
    assert pid is not None and pid != os.getpid() and bird_pids(a.directory) == [pid] and a.bird.running()
    with open(a.bird.pid_file, "w") as f:
        f.write("not a pid\n")
    assert a.bird.pid() is None


def test_start_reports_why_bird_does_not_start(nodes):
    a, _ = nodes
    with open(a.bird.config, "a") as f:
        f.write("protocol nonsense {}\n")
    with pytest.raises(BirdError, match=r"BIRD did not start.*bird\.cfg:\d+:\d+"):
        a.bird.start()
    assert not bird_pids(a.directory) and not a.bird.running()


def test_bird_outlives_the_process_group_that_started_it(nodes):
    """calico-node's death or SIGTERM (its whole process group) never reaches BIRD."""
    a, _ = nodes
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom calico_cni.dataplane.bird import Bird\n"
         "Bird(*sys.argv[1:4], netns=sys.argv[4]).start()\nprint('started', flush=True)\ntime.sleep(60)",
         a.bird.config, a.bird.socket, a.bird.pid_file, a.netns_path],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert starter.stdout.readline().strip() == "started"
        pid = a.bird.pid()
        assert pid is not None
        os.killpg(starter.pid, signal.SIGTERM)
        starter.wait(10)
        _kill_group(starter.pid)
        assert a.bird.pid() == pid and a.bird.running()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of the starter's process group (a BIRD in it would die here)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_calicoctl(node: Node, *args: str, run_dir: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "CALICO_RUN_DIR": run_dir or os.path.dirname(node.bird.socket)}
    return subprocess.run(["nsenter", f"--net={node.netns_path}", str(BIN_DIR / "calicoctl"), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def calico_node_process(nodes):
    """A process named calico-node in node 1's namespace (what `node status` looks for)."""
    a, _ = nodes
    proc = subprocess.Popen(["nsenter", f"--net={a.netns_path}", "bash", "-c", "exec -a calico-node sleep 120"])
    try:
        wait_for(lambda: _cmdline(proc.pid).startswith(b"calico-node\0"), "the calico-node stand-in runs", 10)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_calicoctl_node_status_in_a_node(running, calico_node_process):
    """Both families from BIRD 2's one socket, in Calico's table."""
    a, _ = running
    since4, since6 = a.mesh(4).protocol.since, a.mesh(6).protocol.since
    assert len(since4) == len(since6) == 12  # hh:mm:ss.mmm
    result = run_calicoctl(a, "node", "status")
    assert result.returncode == 0, result.stderr
    # BIRD keeps a state change on its monotonic clock and turns it into wall time at every
    # `show protocols` (now_real - (now - since)), each "now" read separately: the same instant
    # can print a millisecond apart from one query to the next. Compare the times within 2 ms.
    shown = re.findall(r"\| (\d\d:\d\d:\d\d\.\d{3}) \|", result.stdout)
    assert len(shown) == 2, result.stdout
    for printed, expected in zip(shown, (since4, since6)):
        assert abs(_millis(printed) - _millis(expected)) <= 2, (printed, expected)
    since4, since6 = shown
    assert result.stdout == (
        "Calico process is running.\n"
        "\n"
        "IPv4 BGP status\n"
        "+--------------+-------------------+-------+--------------+-------------+\n"
        "| PEER ADDRESS |     PEER TYPE     | STATE |    SINCE     |    INFO     |\n"
        "+--------------+-------------------+-------+--------------+-------------+\n"
        f"| 198.19.240.2 | node-to-node mesh | up    | {since4} | Established |\n"
        "+--------------+-------------------+-------+--------------+-------------+\n"
        "\n"
        "IPv6 BGP status\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
        "|    PEER ADDRESS    |     PEER TYPE     | STATE |    SINCE     |    INFO     |\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
        f"| fd00:198:19:240::2 | node-to-node mesh | up    | {since6} | Established |\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
        "\n"
    )


def _millis(clock: str) -> int:
    """hh:mm:ss.mmm as milliseconds of the day."""
    hours, minutes, seconds = clock.split(":")
    return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def test_calicoctl_node_status_without_calico_node(running):
    a, _ = running
    result = run_calicoctl(a, "node", "status")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "Calico process is not running.\n")


def test_calicoctl_node_status_without_bird(nodes, calico_node_process):
    a, _ = nodes
    result = run_calicoctl(a, "node", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Calico process is running.\n\nThe BGP backend process (BIRD) is not running.\n")
    assert a.bird.socket in result.stdout and "CALICO_RUN_DIR" in result.stdout


def test_probes_on_real_birds(running, tmp_path):
    """-bird-ready and -bird-live of node 1 while node 2's BIRD is up, then stopped."""
    a, b = running
    nodename = tmp_path / "nodename"
    nodename.write_text("node-1")
    assert probes.bird_ready(4, a.bird.socket, str(nodename))[0] and probes.bird_ready(6, a.bird.socket, str(nodename))[0]
    assert probes.bird_live(4, a.bird.socket) == (True, "bird is live: BIRD 2.0.12")
    assert b.bird.graceful_restart() is None
    wait_for(lambda: not a.mesh().established, "node 1 sees the session down", 10)
    assert probes.bird_ready(4, a.bird.socket, str(nodename)) == (False, "calico/node is not ready: BIRD is not ready: BGP not established with 198.19.240.2")
    assert probes.bird_ready(6, a.bird.socket, str(nodename)) == (False, "calico/node is not ready: BIRD6 is not ready: BGP not established with fd00:198:19:240::2")
    ok, message = probes.bird_live(4, b.bird.socket)
    assert not ok and message.startswith("calico/node is not ready: bird is not live: nothing answers on BIRD's control socket")
