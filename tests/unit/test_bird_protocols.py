"""BIRD's control-socket replies, Calico's peer names, `calicoctl node status`'s table and the
node probes, on replies recorded from Debian's BIRD 2.0.12 (two nodes in namespaces, one BGP
session each for IPv4 and IPv6, one unreachable node-specific peer and one passive global peer).
A fake BIRD on a Unix socket in tmp_path replays them: no root, no BIRD process.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from calico_cni.agent import wire
from calico_cni.ctl import node_status
from calico_cni.dataplane import bird
from calico_cni.dataplane.bird import BirdError, BirdUnreachable, Control, Protocol, calico_peer, calico_peers, parse_protocols, parse_reply
from calico_cni.node import probes

WELCOME = b"0001 BIRD 2.0.12 ready.\n"
# `show protocols` on node A (198.19.250.1, fd00:198:19:250::1), recorded.
PROTOCOLS = (
    b"2002-Name       Proto      Table      State  Since         Info\n"
    b"1002-device1    Device     ---        up     19:47:29.474  \n"
    b" direct1    Direct     ---        up     19:49:28.943  \n"
    b" kernel1    Kernel     master4    up     19:47:29.474  \n"
    b" kernel2    Kernel     master6    up     19:49:28.942  \n"
    b" static1    Static     master4    up     19:47:29.474  \n"
    b" static2    Static     master6    up     19:49:28.942  \n"
    b" Mesh_198_19_250_2 BGP        ---        up     19:47:30.681  Established   \n"
    b" Mesh_fd00_198_19_250__2 BGP        ---        up     19:49:29.572  Established   \n"
    b" Node_198_19_250_9 BGP        ---        start  19:49:28.942  Connect       Socket: No route to host\n"
    b" Global_198_19_250_10 BGP        ---        start  19:49:28.942  Passive       \n"
    b"0000 \n"
)
# The same node while its only peer was stopped with `graceful restart`, recorded.
PROTOCOLS_PEER_DOWN = (
    b"2002-Name       Proto      Table      State  Since         Info\n"
    b"1002-device1    Device     ---        up     19:45:29.793  \n"
    b" kernel1    Kernel     master4    up     19:45:29.793  \n"
    b" static1    Static     master4    up     19:45:29.793  \n"
    b" Mesh_198_19_250_2 BGP        ---        start  19:46:33.672  Active        Socket: Connection refused\n"
    b"0000 \n"
)
STATUS = (
    b"1000-BIRD 2.0.12\n"
    b"1011-Router ID is 198.19.250.1\n"
    b" Hostname is vm\n"
    b" Current server time is 2026-12-01 19:45:47.197\n"
    b" Last reboot on 2026-12-01 19:45:29.793\n"
    b" Last reconfiguration on 2026-12-01 19:45:29.793\n"
    b"0013 Daemon is up and running\n"
)
# `show status` of a BIRD started with -R while its peer was down, recorded.
STATUS_RECOVERING = (
    b"1000-BIRD 2.0.12\n"
    b"1011-Router ID is 198.19.250.2\n"
    b" Hostname is vm\n"
    b" Current server time is 2026-12-01 19:47:16.997\n"
    b" Last reboot on 2026-12-01 19:47:14.385\n"
    b" Last reconfiguration on 2026-12-01 19:47:14.385\n"
    b"0024-Graceful restart recovery in progress\n"
    b"   Waiting for 1 channels to recover\n"
    b"   Wait timer is 237.387/240\n"
    b"0013 Daemon is up and running\n"
)
CONFIGURED = b"0002-Reading configuration from /tmp/hb/a/bird.cfg\n0003 Reconfigured\n"
CONFIGURING = b"0002-Reading configuration from /tmp/hb/a/bird.cfg\n0004 Reconfiguration in progress\n"
CONFIG_ERROR = b"0002-Reading configuration from /tmp/hb/a/bird.cfg\n8002 /tmp/hb/a/bird.cfg:2:19 syntax error, unexpected CF_SYM_UNDEFINED\n"
PARSE_ERROR = b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n"
GRACEFUL = b"0025 Graceful restart requested\n"


class FakeBird:
    """A control socket answering each command with a recorded reply (split into small writes, as
    a socket may deliver it); `None` as a reply: greet, then never answer."""

    def __init__(self, path: str, replies: dict[str, bytes | None], welcome: bytes = WELCOME) -> None:
        self.path = path
        self.replies = replies
        self.welcome = welcome
        self.commands: list[str] = []
        self.connections = 0  # accepted, greeting-only ones too
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(self.welcome)
                data = b""
                while b"\n" not in data:
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue  # a probe that only waited for the greeting
                command = data.decode().strip()
                self.commands.append(command)
                reply = self.replies.get(command, PARSE_ERROR)
                if reply is None:
                    self.stop.wait(10)
                    continue
                for i in range(0, len(reply), 7):
                    conn.sendall(reply[i:i + 7])

    def close(self) -> None:
        self.stop.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def fake_bird(tmp_path):
    made: list[FakeBird] = []

    def make(replies: dict[str, bytes | None], **kwargs) -> FakeBird:
        made.append(FakeBird(str(tmp_path / f"bird{len(made)}.ctl"), replies, **kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


# --- reply parsing ---------------------------------------------------------------------------

def test_show_protocols_rows_from_a_recorded_bird2_reply():
    rows = parse_protocols(parse_reply(PROTOCOLS))
    assert [r.name for r in rows] == ["device1", "direct1", "kernel1", "kernel2", "static1", "static2", "Mesh_198_19_250_2",
                                      "Mesh_fd00_198_19_250__2", "Node_198_19_250_9", "Global_198_19_250_10"]
    assert rows[0] == Protocol("device1", "Device", "---", "up", "19:47:29.474", "")
    assert rows[6] == Protocol("Mesh_198_19_250_2", "BGP", "---", "up", "19:47:30.681", "Established")
    # Runs of spaces inside Info become one, as Calico joins the columns.
    assert rows[8].info == "Connect Socket: No route to host" and rows[8].bgp_state == "Connect"
    assert rows[9].info == "Passive" and rows[9].state == "start"


def test_reply_codes_and_continuation_lines():
    reply = parse_reply(STATUS_RECOVERING)
    assert reply.code == "0013" and reply.ok
    assert reply.has("0024") and not parse_reply(STATUS).has("0024")
    # A line starting with a space continues the code before it.
    assert [line.code for line in reply.lines[6:9]] == ["0024", "0024", "0024"]
    assert reply.lines[7].text.strip() == "Waiting for 1 channels to recover"
    assert parse_reply(CONFIG_ERROR).code == "8002" and not parse_reply(CONFIG_ERROR).ok
    assert parse_reply(PARSE_ERROR).code == "9001"
    # A spontaneous message (`+`) is not part of the reply.
    assert parse_reply(b"+0023 hello\n0003 Reconfigured\n").lines == (bird.Line("0003", "Reconfigured"),)


def test_bird1_lowercase_heading_and_a_two_word_since_are_accepted():
    """BIRD 1.x (Calico's fork) writes the heading in lower case; `timeformat protocol iso long`
    gives Since a date and a time."""
    reply = parse_reply(b"2002-name     proto    table    state  since       info\n"
                        b"1002-kernel1  Kernel   master   up     2016-11-21\n"
                        b" Mesh_172_17_8_102 BGP      master   up     2016-11-21 10:11:12  Established\n"
                        b"0000 \n")
    rows = parse_protocols(reply)
    assert rows[0] == Protocol("kernel1", "Kernel", "master", "up", "2016-11-21", "")
    assert rows[1].since == "2016-11-21 10:11:12" and rows[1].info == "Established"


@pytest.mark.parametrize("data, message", [
    (b"2002-Name Proto Table State Since\n0000 \n", "unknown BIRD table output format"),
    (b"1002-device1 Device --- up 19:47:29.474\n", "ended before its last line"),
    (b"hello\n", "unexpected output line"),
    (b" continuation first\n0000 \n", "unexpected output line"),
])
def test_malformed_replies_are_errors(data, message):
    with pytest.raises(BirdError, match=message):
        parse_protocols(parse_reply(data))


def test_an_error_reply_to_show_protocols_is_an_error():
    with pytest.raises(BirdError, match="refused show protocols.*syntax error"):
        parse_protocols(parse_reply(PARSE_ERROR))


# --- Calico's peer names ---------------------------------------------------------------------

def test_calico_peers_split_by_the_family_of_the_address_in_the_name():
    rows = parse_protocols(parse_reply(PROTOCOLS))
    v4 = calico_peers(rows, 4)
    assert [(p.address, p.kind, p.established) for p in v4] == [
        ("198.19.250.2", "node-to-node mesh", True), ("198.19.250.9", "node specific", False), ("198.19.250.10", "global", False)]
    v6 = calico_peers(rows, 6)
    assert [(p.address, p.version, p.kind) for p in v6] == [("fd00:198:19:250::2", 6, "node-to-node mesh")]
    assert len(calico_peers(rows)) == 4


@pytest.mark.parametrize("name, proto, expected", [
    ("Global_10_0_0_1_port_180", "BGP", ("10.0.0.1.port.180", 4, "global")),  # Calico rebuilds the name as it is
    ("Node_fd80_24e2_f998_72d7__2", "BGP", ("fd80:24e2:f998:72d7::2", 6, "node specific")),
    ("Mesh_192_168_56_101", "BGP", ("192.168.56.101", 4, "node-to-node mesh")),
    ("bgp1", "BGP", None),  # not a Calico name
    ("Mesh_not_an_address", "BGP", None),
    ("Mesh_198_19_0_1", "Static", None),  # not a BGP protocol
])
def test_calico_peer_names(name, proto, expected):
    peer = calico_peer(Protocol(name, proto, "---", "up", "10:00:00.000", "Established"))
    assert (peer and (peer.address, peer.version, peer.kind)) == expected


# --- the table of calicoctl node status -------------------------------------------------------

def test_table_matches_calicos_output_with_a_wrapped_info_cell():
    """Calico's own output (projectcalico/calicoctl#1883): an INFO over 30 columns is wrapped."""
    expected = (
        "+----------------+-------------------+-------+----------+--------------------------------+\n"
        "|  PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |              INFO              |\n"
        "+----------------+-------------------+-------+----------+--------------------------------+\n"
        "| 192.168.63.204 | node-to-node mesh | start | 17:19:38 | Active Socket: Connection      |\n"
        "|                |                   |       |          | refused                        |\n"
        "+----------------+-------------------+-------+----------+--------------------------------+\n"
    )
    rows = [["192.168.63.204", "node-to-node mesh", "start", "17:19:38", "Active Socket: Connection refused"]]
    assert node_status.table(node_status.HEADERS, rows) == expected


def test_table_matches_calicos_output_with_dates_and_several_rows():
    """Calico's output in kubernetes/kops#5958 (rows cut to three)."""
    expected = (
        "+---------------+-------------------+-------+------------+--------------------------------+\n"
        "| PEER ADDRESS  |     PEER TYPE     | STATE |   SINCE    |              INFO              |\n"
        "+---------------+-------------------+-------+------------+--------------------------------+\n"
        "| 172.20.36.20  | node-to-node mesh | start | 2018-10-16 | Connect Socket: Host is        |\n"
        "|               |                   |       |            | unreachable                    |\n"
        "| 172.20.37.184 | node-to-node mesh | start | 2018-10-16 | Connect Socket: Host is        |\n"
        "|               |                   |       |            | unreachable                    |\n"
        "| 172.20.43.76  | node-to-node mesh | start | 2018-10-16 | Active Socket: Host is         |\n"
        "|               |                   |       |            | unreachable                    |\n"
        "+---------------+-------------------+-------+------------+--------------------------------+\n"
    )
    rows = [[ip, "node-to-node mesh", "start", "2018-10-16", f"{state} Socket: Host is unreachable"]
            for ip, state in (("172.20.36.20", "Connect"), ("172.20.37.184", "Connect"), ("172.20.43.76", "Active"))]
    assert node_status.table(node_status.HEADERS, rows) == expected


def test_table_of_established_peers_is_not_wrapped():
    """Calico's output in projectcalico/calico#6285."""
    expected = (
        "+---------------+-------------------+-------+----------+-------------+\n"
        "| PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n"
        "+---------------+-------------------+-------+----------+-------------+\n"
        "| 10.128.62.127 | node-to-node mesh | up    | 08:27:26 | Established |\n"
        "+---------------+-------------------+-------+----------+-------------+\n"
    )
    assert node_status.table(node_status.HEADERS, [["10.128.62.127", "node-to-node mesh", "up", "08:27:26", "Established"]]) == expected


def test_wrapping_uses_minimum_raggedness_not_greedy_filling():
    """tablewriter balances the lines: greedy filling would put "aaaa bbbb" on the first line."""
    lines, width = node_status._cell_lines("aaaaaaaaaaaaaaaaaaaaa bbbb cccccccccccccccccccccc")  # 21 + 4 + 22
    assert lines == ["aaaaaaaaaaaaaaaaaaaaa bbbb", "cccccccccccccccccccccc"] and width == 30
    lines, width = node_status._cell_lines("a" * 35)
    assert lines == ["a" * 35] and width == 35  # one word wider than the limit is not cut


def test_bgp_status_sections_from_the_recorded_reply():
    out = node_status.bgp_status(parse_protocols(parse_reply(PROTOCOLS)))
    assert out == (
        "\nIPv4 BGP status\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| PEER ADDRESS  |     PEER TYPE     | STATE |    SINCE     |              INFO              |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| 198.19.250.2  | node-to-node mesh | up    | 19:47:30.681 | Established                    |\n"
        "| 198.19.250.9  | node specific     | start | 19:49:28.942 | Connect Socket: No route to    |\n"
        "|               |                   |       |              | host                           |\n"
        "| 198.19.250.10 | global            | start | 19:49:28.942 | Passive                        |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "\nIPv6 BGP status\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
        "|    PEER ADDRESS    |     PEER TYPE     | STATE |    SINCE     |    INFO     |\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
        "| fd00:198:19:250::2 | node-to-node mesh | up    | 19:49:29.572 | Established |\n"
        "+--------------------+-------------------+-------+--------------+-------------+\n"
    )


def test_bgp_status_without_peers():
    rows = [r for r in parse_protocols(parse_reply(PROTOCOLS)) if r.proto != "BGP"]
    assert node_status.bgp_status(rows) == "\nIPv4 BGP status\nNo IPv4 peers found.\n\nIPv6 BGP status\nNo IPv6 peers found.\n"


@pytest.mark.parametrize("argv, expected", [
    (["calico-node"], True),  # exec -a calico-node
    (["/usr/local/bin/calico-node", "--log-level", "info"], True),
    (["/opt/venv/bin/python", "-IS", "/usr/local/bin/calico-node"], True),  # the launcher
    (["/opt/venv/bin/python", "-IS", "/usr/local/bin/calico-node", "-bird-ready"], False),  # a probe
    (["/opt/venv/bin/python", "-IS", "/usr/local/bin/calicoctl", "node", "status"], False),
    (["/usr/bin/python3", "-m", "calico_cni.node.main"], True),
    (["/usr/bin/python3", "-m", "calico_cni.ctl.main"], False),
    (["vim", "notes", "calico-node"], False),
    (["/usr/bin/python3", "/tmp/other.py", "calico-node"], False),
    ([], False),
])
def test_which_processes_are_calico_node(argv, expected):
    assert node_status.is_calico_node(argv) is expected


# --- the control socket ----------------------------------------------------------------------

def test_control_replays_a_recorded_session(fake_bird):
    fake = fake_bird({"show protocols": PROTOCOLS, "show status": STATUS_RECOVERING})
    control = Control(fake.path)
    assert control.running()
    assert [p.address for p in calico_peers(control.show_protocols(), 4)] == ["198.19.250.2", "198.19.250.9", "198.19.250.10"]
    assert control.graceful_restart_in_progress()
    assert control.command("show foo").code == "9001"
    assert fake.commands == ["show protocols", "show status", "show foo"]


def test_configure_and_graceful_restart_report_birds_answer(fake_bird, tmp_path):
    ok = bird.Bird(str(tmp_path / "bird.cfg"), fake_bird({"configure": CONFIGURED}).path, str(tmp_path / "bird.pid"))
    assert ok.configure() is None
    queued = bird.Bird(str(tmp_path / "bird.cfg"), fake_bird({"configure": CONFIGURING}).path, str(tmp_path / "bird.pid"))
    assert queued.configure() is None
    refused = bird.Bird(str(tmp_path / "bird.cfg"), fake_bird({"configure": CONFIG_ERROR}).path, str(tmp_path / "bird.pid"))
    assert refused.configure() == "8002 /tmp/hb/a/bird.cfg:2:19 syntax error, unexpected CF_SYM_UNDEFINED"
    no_bird = bird.Bird(str(tmp_path / "bird.cfg"), str(tmp_path / "absent.ctl"), str(tmp_path / "bird.pid"))
    assert "nothing answers on BIRD's control socket" in no_bird.configure()
    assert "nothing answers" in no_bird.graceful_restart()
    other = bird.Bird(str(tmp_path / "bird.cfg"), fake_bird({"graceful restart": PARSE_ERROR}).path, str(tmp_path / "bird.pid"))
    assert other.graceful_restart() == "9001 syntax error, unexpected CF_SYM_UNDEFINED"


def test_a_bird_that_never_answers_fails_the_call_instead_of_hanging(fake_bird):
    fake = fake_bird({"show protocols": None})
    control = Control(fake.path, timeout=0.3)
    with pytest.raises(BirdError, match="did not answer") as info:
        control.show_protocols()
    assert not isinstance(info.value, BirdUnreachable)
    silent = fake_bird({}, welcome=b"")
    assert not Control(silent.path, timeout=0.3).running()


def test_a_reply_cut_short_is_an_error(fake_bird):
    fake = fake_bird({"show protocols": PROTOCOLS[:120]})
    with pytest.raises(BirdError, match="closed its control socket"):
        Control(fake.path).show_protocols()


def test_nothing_listening_is_unreachable(tmp_path):
    stale = tmp_path / "stale.ctl"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # bound then closed: the file stays, nobody listens (a killed BIRD)
    for path in (stale, tmp_path / "absent.ctl"):
        with pytest.raises(BirdUnreachable, match="nothing answers"):
            Control(str(path)).show_protocols()
        assert not Control(str(path)).running()


def test_a_socket_that_is_not_birds_is_an_error_not_a_missing_bird(fake_bird, tmp_path):
    """Something else answers (or refuses the stream) on the path: an error naming the socket,
    never BirdUnreachable, which would have start() start a BIRD there."""
    other = fake_bird({}, welcome=b"0013 Daemon is up and running\n")
    with pytest.raises(BirdError, match=f"BIRD did not greet on {other.path}: Daemon is up and running") as info:
        Control(other.path).show_protocols()
    assert not isinstance(info.value, BirdUnreachable)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "dgram.ctl")
    datagram.bind(path)
    try:
        with pytest.raises(BirdError, match=f"cannot connect to BIRD's control socket {path}: Protocol wrong type for socket") as info:
            Control(path).show_protocols()
        assert not isinstance(info.value, BirdUnreachable) and not Control(path).running()
    finally:
        datagram.close()


def test_a_command_is_one_line(fake_bird):
    control = Control(fake_bird({}).path)
    for command in ("show status\nshow protocols", "show status\r"):
        with pytest.raises(ValueError, match="one command, one line"):
            control.command(command)


def test_a_started_bird_that_never_answers_is_an_error(tmp_path, monkeypatch):
    """`bird` exits 0 (it forked) but nothing ever answers on the socket."""
    monkeypatch.setattr(bird, "START_WAIT", 0.3)
    binary = tmp_path / "bird"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    socket_path = str(tmp_path / "run" / "bird.ctl")
    b = bird.Bird(str(tmp_path / "bird.cfg"), socket_path, str(tmp_path / "run" / "bird.pid"), binary=str(binary))
    with pytest.raises(BirdError) as info:
        b.start()
    assert str(info.value) == f"BIRD started but does not answer on {socket_path} after 0.3 s"


def test_a_socket_path_too_long_for_a_unix_socket_is_a_clear_error(tmp_path):
    """107 bytes is the most BIRD and the kernel take; every call says so, and start() runs nothing."""
    longest = str(tmp_path / ("s" * (bird.MAX_SOCKET_PATH - len(str(tmp_path)) - 1)))
    assert len(longest) == bird.MAX_SOCKET_PATH
    with pytest.raises(BirdUnreachable):  # long, but not too long: nothing listens there
        Control(longest).show_protocols()
    too_long = longest + "x"
    message = f"BIRD's control socket path {too_long} is 108 bytes long: a Unix socket's path has at most 107: use a shorter run directory"
    with pytest.raises(BirdError) as info:
        Control(too_long).show_protocols()
    assert str(info.value) == message and not isinstance(info.value, BirdUnreachable)
    assert not Control(too_long).running()
    with pytest.raises(BirdError) as info:
        bird.Bird(str(tmp_path / "bird.cfg"), too_long, str(tmp_path / "bird.pid"), binary=str(tmp_path / "never-run")).start()
    assert str(info.value) == message


def test_start_never_starts_a_second_bird_beside_a_hung_one(fake_bird, tmp_path):
    hung = fake_bird({}, welcome=b"")
    marker = tmp_path / "started"
    binary = tmp_path / "bird"
    binary.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    binary.chmod(0o755)
    with pytest.raises(BirdError, match="did not answer") as info:
        bird.Bird(str(tmp_path / "bird.cfg"), hung.path, str(tmp_path / "bird.pid"), timeout=0.3, binary=str(binary)).start()
    assert not isinstance(info.value, BirdUnreachable) and not marker.exists()


def test_check_and_start_without_a_bird_to_run(tmp_path):
    missing = tmp_path / "sbin" / "bird"
    config = tmp_path / "bird.cfg"
    config.write_text("router id 198.19.0.1;\n")
    b = bird.Bird(str(config), str(tmp_path / "bird.ctl"), str(tmp_path / "bird.pid"), binary=str(missing))
    with pytest.raises(BirdError) as info:
        b.check(str(config))
    assert str(info.value) == f"cannot check BIRD's configuration: cannot run {missing}: No such file or directory (is bird2 installed?)"
    with pytest.raises(BirdError) as info:
        b.install("router id 198.19.0.2;\n")
    assert "cannot check BIRD's configuration" in str(info.value)
    assert config.read_text() == "router id 198.19.0.1;\n" and sorted(os.listdir(tmp_path)) == ["bird.cfg"]  # untouched, nothing left
    with pytest.raises(BirdError) as info:
        b.start()
    assert str(info.value) == f"cannot start BIRD: cannot run {missing}: No such file or directory (is bird2 installed?)"


def test_a_bird_that_accepts_graceful_restart_and_stays_is_reported(fake_bird, tmp_path):
    stays = bird.Bird(str(tmp_path / "bird.cfg"), fake_bird({"graceful restart": GRACEFUL}).path, str(tmp_path / "bird.pid"))
    assert stays.graceful_restart(wait=0.2) == "BIRD accepted graceful restart but still runs after 0.2 s"


# --- probes ----------------------------------------------------------------------------------

@pytest.fixture
def nodename(tmp_path):
    path = tmp_path / "nodename"
    path.write_text("node-a")
    return path


def test_bird_ready_right_after_start_needs_every_peer_established(fake_bird, nodename):
    fake = fake_bird({"show protocols": PROTOCOLS, "show status": STATUS})
    ok, message = probes.bird_ready(4, fake.path, str(nodename))
    assert not ok
    assert message == "calico/node is not ready: BIRD is not ready: BGP not established with 198.19.250.9,198.19.250.10"
    ok, message = probes.bird_ready(6, fake.path, str(nodename))
    assert ok, message


def test_bird_ready_later_needs_one_established_peer(fake_bird, nodename):
    fake = fake_bird({"show protocols": PROTOCOLS})
    old = time.time() - 31
    os.utime(nodename, (old, old))
    assert probes.bird_ready(4, fake.path, str(nodename))[0]
    down = fake_bird({"show protocols": PROTOCOLS_PEER_DOWN})
    ok, message = probes.bird_ready(4, down.path, str(nodename))
    assert (ok, message) == (False, "calico/node is not ready: BIRD is not ready: BGP not established with 198.19.250.2")
    # The threshold is the -threshold-time given.
    assert not probes.bird_ready(4, fake.path, str(nodename), threshold=60)[0]


def test_bird_ready_waits_for_graceful_restart_recovery(fake_bird, nodename):
    all_up = PROTOCOLS.replace(b"start  19:49:28.942  Connect       Socket: No route to host", b"up     19:49:28.942  Established")
    all_up = all_up.replace(b"start  19:49:28.942  Passive", b"up     19:49:28.942  Established")
    recovering = fake_bird({"show protocols": all_up, "show status": STATUS_RECOVERING})
    assert probes.bird_ready(4, recovering.path, str(nodename)) == (False, "calico/node is not ready: BIRD is not ready: graceful restart in progress")
    recovered = fake_bird({"show protocols": all_up, "show status": STATUS})
    assert probes.bird_ready(4, recovered.path, str(nodename))[0]


def test_bird_ready_without_peers_and_without_bird(fake_bird, nodename, tmp_path):
    no_peers = PROTOCOLS.replace(b" Mesh_", b" mesh_").replace(b" Node_", b" node_").replace(b" Global_", b" global_")
    assert probes.bird_ready(4, fake_bird({"show protocols": no_peers}).path, str(nodename))[0]
    ok, message = probes.bird_ready(4, str(tmp_path / "absent.ctl"), str(nodename))
    assert not ok and message.startswith("calico/node is not ready: BIRD is not ready: Error querying BIRD: unable to connect to BIRDv4 socket: ")
    ok, message = probes.bird_ready(6, fake_bird({}).path, str(tmp_path / "no-nodename"))
    assert not ok and message.startswith("calico/node is not ready: BIRD6 is not ready: Failed to stat() nodename file: ")


def test_bird_live(fake_bird, tmp_path):
    assert probes.bird_live(4, fake_bird({"show status": STATUS}).path) == (True, "bird is live: BIRD 2.0.12")
    ok, message = probes.bird_live(6, str(tmp_path / "absent.ctl"))
    assert not ok and message.startswith("calico/node is not ready: bird6 is not live: nothing answers")


class FakeDaemon:
    """calico-node's plugins' socket answering the HEALTH request with `answer`."""

    def __init__(self, path: str, answer: dict) -> None:
        self.answer = answer
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                plugin, _, _ = wire.recv_request(conn)
                assert plugin == wire.HEALTH
                wire.send_answer(conn, 0, json.dumps(self.answer).encode())

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def daemon(tmp_path):
    made = []

    def make(answer: dict) -> str:
        path = str(tmp_path / f"cni{len(made)}.sock")
        made.append(FakeDaemon(path, answer))
        return path

    yield make
    for fake in made:
        fake.close()


def part(alive=True, ready=True, last_ok=None, detail=None, last_error=None, period=None) -> dict:
    return {"alive": alive, "ready": ready, "restarts": 0, "last_error": last_error, "last_ok": last_ok, "detail": detail, "period": period}


def test_felix_ready(daemon, tmp_path):
    now = time.time()
    ready = daemon({"status": "ok", "uptime_s": 5, "in_sync": True, "parts": {"syncer": part(last_ok=now), "routing": part(last_ok=now)}})
    assert probes.felix_ready(ready) == (True, "calico-node is ready: routing, syncer")
    waiting = daemon({"in_sync": False, "parts": {"syncer": part(ready=False), "routing": part(ready=False, detail="waiting for the first full list of the datastore")}})
    ok, message = probes.felix_ready(waiting)
    assert not ok
    assert message == ("calico/node is not ready: felix is not ready: the datastore watch is not in sync; "
                       "routing is not ready (waiting for the first full list of the datastore); syncer is not ready")
    agent = daemon({"status": "ok", "served": 3})  # calico-cni-agent: no parts
    assert "reports no parts" in probes.felix_ready(agent)[1]
    assert probes.felix_ready(str(tmp_path / "absent.sock")) == (False, f"calico/node is not ready: felix is not ready: nothing answers on {tmp_path}/absent.sock")


def test_felix_live(daemon):
    now = time.time()
    live = daemon({"uptime_s": 100, "in_sync": False, "parts": {"syncer": part(ready=False, last_ok=now - 50),
                                                               "routing": part(ready=False, period=2.0),
                                                               "addresses": part(last_ok=now - 50, period=60.0)}})
    assert probes.felix_live(live, now=now)[0]  # not ready, but alive
    ok, message = probes.felix_live(live, threshold=30, now=now)
    assert not ok
    # Only the periodic parts are aged: routing (never a good pass), not addresses (within two of
    # its periods) nor the syncer (it passes when etcd speaks).
    assert message == "calico/node is not ready: Felix is not live: routing has had no good pass since calico-node started 100 s ago"
    assert probes.felix_live(live, threshold=120, now=now)[0]
    dead = daemon({"uptime_s": 1, "parts": {"routing": part(alive=False, last_error="RuntimeError: boom")}})
    assert probes.felix_live(dead) == (False, "calico/node is not ready: Felix is not live: routing is not running (RuntimeError: boom)")


def test_run_maps_probe_names(fake_bird, daemon, nodename):
    class Settings:
        bird_socket = fake_bird({"show status": STATUS, "show protocols": PROTOCOLS}).path
        nodename_file = str(nodename)
        cni_socket = daemon({"uptime_s": 1, "in_sync": True, "parts": {"routing": part()}})
        threshold_time = None

    assert probes.run("bird-live", Settings)[0] and probes.run("bird6-live", Settings)[0]
    assert not probes.run("bird-ready", Settings)[0] and probes.run("bird6-ready", Settings)[0]
    assert probes.run("felix-ready", Settings)[0] and probes.run("felix-live", Settings)[0]
    with pytest.raises(ValueError):
        probes.run("bogus", Settings)
