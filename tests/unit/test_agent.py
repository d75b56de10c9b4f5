"""The per-node agent without root, etcd or namespaces: a server on a thread of the test process
answers on its socket (errors, malformed frames, health), CNI_NETNS under /proc/self is rewritten to
the caller's, and the thin client's copies of the protocol limits and its import cost (a forwarded
request imports nothing heavy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.log_records import root_logging_restored
from tests.unit import test_node_probes

# A socket that listens but never accepts, its queue full (test_node_probes' probes meet it too).
stuck_listener = test_node_probes.stuck_listener


def test_caller_paths_rewrite_proc_self_to_the_caller():
    """CNI_NETNS under /proc/self or /proc/thread-self names the plugin process, which the agent
    is not: it becomes the caller's /proc/<pid>; any other value is left as it is."""
    from calico_cni.agent.server import _caller_paths

    caller = "/proc/4242/ns/net"
    assert _caller_paths({"CNI_NETNS": "/proc/self/ns/net", "X": "1"}, caller) == {"CNI_NETNS": "/proc/4242/ns/net", "X": "1"}
    assert _caller_paths({"CNI_NETNS": "/proc/thread-self/ns/net"}, caller)["CNI_NETNS"] == "/proc/4242/ns/net"
    assert _caller_paths({"CNI_NETNS": "/proc/self/fd/7"}, caller)["CNI_NETNS"] == "/proc/4242/fd/7"
    for unchanged in ({"CNI_NETNS": "/var/run/netns/pod"}, {"CNI_NETNS": "/proc/selfish/ns/net"}, {"CNI_NETNS": "/proc/1/ns/net"}, {}):
        assert _caller_paths(unchanged, caller) == unchanged
    assert _caller_paths({"CNI_NETNS": "/proc/self/ns/net"}, "") == {"CNI_NETNS": "/proc/self/ns/net"}


def _ask(path: str, plugin: str, env: dict, stdin: bytes) -> tuple[int, bytes, bytes]:
    from calico_cni.agent import client, wire

    sock = client.connect(path)
    assert sock is not None
    try:
        sock.settimeout(10)
        wire.send_request(sock, plugin, env, stdin)
        return wire.recv_answer(sock)
    finally:
        sock.close()


def test_agent_answers_an_unknown_plugin_with_a_cni_error(bare_server):
    path, server = bare_server
    code, out, err = _ask(path, "no-such-plugin", {"CNI_COMMAND": "ADD"}, b'{"cniVersion": "0.4.0"}')
    answer = json.loads(out)
    assert code == 1 and err == b""
    assert answer["code"] == 4 and "no-such-plugin" in answer["msg"] and answer["cniVersion"] == "0.4.0"


def test_agent_drops_a_malformed_request_and_keeps_serving(bare_server):
    from calico_cni.agent import client, wire

    path, server = bare_server
    bad_frames = (
        b"calico\0NO-EQUALS-SIGN",  # an environment entry that is not KEY=VALUE
        b"calico\0=value",  # an empty key
        b"\xff\xfe\0A=B",  # a plugin name that is not ASCII
    )
    for header in bad_frames:
        sock = client.connect(path)
        try:
            sock.settimeout(10)
            sock.sendall(len(header).to_bytes(4, "big") + header + (0).to_bytes(4, "big"))
            with pytest.raises((wire.Truncated, ConnectionResetError)):  # closed with bytes unread: reset
                wire.recv_answer(sock)
        finally:
            sock.close()
    sock = client.connect(path)
    try:
        sock.settimeout(10)
        sock.sendall((wire.MAX_FRAME + 1).to_bytes(4, "big"))  # over the limit: never read
        with pytest.raises((wire.Truncated, ConnectionResetError)):
            wire.recv_answer(sock)
    finally:
        sock.close()
    code, out, _ = _ask(path, wire.HEALTH, {}, b"")
    assert code == 0 and json.loads(out)["status"] == "ok"
    assert server.served == 0


def test_listen_refuses_a_socket_an_agent_answers_on(bare_server):
    """A second agent on the same socket stops with a message; the first keeps its socket."""
    from calico_cni.agent import wire
    from calico_cni.agent.daemon import listen

    path, _ = bare_server
    with pytest.raises(SystemExit, match="calico-cni-agent: a daemon already answers on " + path):
        listen(path)
    code, out, _ = _ask(path, wire.HEALTH, {}, b"")
    assert code == 0 and json.loads(out)["status"] == "ok"


def test_listen_replaces_a_stale_socket_and_keeps_other_users_out(tmp_path):
    """The socket a killed agent left behind (bound, nobody listening) is replaced; the socket is
    0600 in a 0700 directory."""
    import socket
    import stat

    from calico_cni.agent import client
    from calico_cni.agent.daemon import listen

    directory = tmp_path / "agent"
    directory.mkdir(mode=0o755)
    path = str(directory / "cni.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    assert client.connect(path) is None  # nothing answers there
    listener = listen(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        answering = client.connect(path)
        assert answering is not None
        answering.close()
    finally:
        listener.close()


def test_thin_client_copies_of_protocol_limits_agree():
    """The thin client keeps its own copies (importing the protocol modules costs 20 ms): they
    must not drift from the limits the plugins apply."""
    from calico_cni.agent import client
    from calico_cni.config import MAX_OPERATION_TIMEOUT
    from calico_cni.protocol.request import MAX_STDIN

    assert client.MAX_STDIN == MAX_STDIN
    assert client.ANSWER_TIMEOUT > MAX_OPERATION_TIMEOUT


def run_as_launched(code: str, **run_args) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `code` as an installed launcher runs an entry point (`python -I -S`, the package's
    directories on sys.path): the finished process and the modules it had imported at exit."""
    from calico_cni.launcher import import_path

    report = "lambda: sys.__stderr__.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n') and sys.__stderr__.flush()"
    script = (
        "import sys, atexit, posix\n"
        f"sys.path[:0] = {import_path()!r}\n"
        f"report = {report}\n"
        "atexit.register(report)\n"
        # The thin client ends with posix._exit, which runs no atexit hook: report there too.
        "_exit = posix._exit\n"
        "posix._exit = lambda code: (report(), _exit(code))\n"
        + code
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, timeout=30, **run_args)
    return proc, set(proc.stderr.decode().rpartition("MODULES ")[2].split())


@pytest.mark.parametrize("plugin", ["calico", "calico-ipam"])
def test_thin_path_imports_nothing_heavy(bare_server, plugin):
    """A plugin run the agent answers (here: with an error, it serves no plugin), started by its
    launcher, imports nothing but the client and the wire format: not the plugins' package, not
    the protocol modules, json, socket, typing, re, logging, nor even os: the launcher's
    `python -I -S` start plus the client is the whole cost of a forwarded request."""
    from calico_cni.launcher import render

    path, _ = bare_server
    env = {"CNI_COMMAND": "ADD", "CALICO_CNI_AGENT_SOCKET": path, "PATH": os.environ.get("PATH", "")}
    launcher = render(plugin).split("\n", 3)[3]  # after the interpreter line, `import sys` and sys.path
    assert launcher.startswith("from calico_cni.agent.client import main_thin\n"), launcher
    proc, modules = run_as_launched(launcher, input=b'{"cniVersion": "1.0.0"}', env=env)
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 4, proc.stdout  # the agent's answer
    heavy = {"json", "socket", "typing", "re", "logging", "dataclasses", "struct", "importlib", "os", "__future__"}
    assert modules and not modules & heavy, sorted(modules & heavy)
    ours = sorted(m for m in modules if m.startswith(("calico_cni", "calico_ipam")))
    assert ours == ["calico_cni", "calico_cni.agent", "calico_cni.agent.client", "calico_cni.agent.wire"], ours


def test_health_probe_loads_neither_plugins_nor_grpc(bare_server):
    """`calico-cni-agent health`, which supervisors run often, imports the client and the wire
    format only: serving imports the daemon, the plugins and (on the first request) gRPC."""
    path, _ = bare_server
    proc, modules = run_as_launched(
        f"sys.argv = ['calico-cni-agent', 'health', '--socket', {path!r}]\nfrom calico_cni.agent.main import main\nmain()\n"
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "ok", proc.stdout
    assert modules and not [m for m in modules if m.startswith(("calico_cni.plugins", "calico_cni.agent.daemon", "calico_ipam", "grpc", "calico_cni.dataplane"))]


def test_health_probe_fails_when_nothing_answers(tmp_path, capsys):
    """A supervisor's probe of an agent that is not running exits 1 saying where it looked."""
    from calico_cni.agent.main import health, parser

    path = str(tmp_path / "absent.sock")
    assert health(parser().parse_args(["health", "--socket", path])) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"calico-cni-agent: nothing answers on {path}\n"


def test_warm_leases_hand_back_only_a_token_they_refreshed():
    """Two requests lease the warm client's token; one finds it stale and authenticates again. The
    other, closing later with the old token, must not put the stale token back: every later request
    would then authenticate again before its first call. No etcd is reached: a lease only builds
    the channel object."""
    from calico_cni.agent.warm import WarmStores
    from calico_cni.config import EtcdSettings

    settings = EtcdSettings(("http://127.0.0.1:1",), username="calico", password="secret")
    stores = WarmStores()
    try:
        first = stores.connect(settings)
        warm = stores._clients[settings]
        warm._token = "stale"
        old, refreshing = stores.connect(settings).client, stores.connect(settings).client
        refreshing._token = "fresh"  # what authenticating again leaves on the lease
        refreshing.close()
        old.close()
        assert warm._token == "fresh"
        first.close()  # a lease that started before any token hands back nothing it did not get
        assert warm._token == "fresh"
        assert stores.connect(settings).client._token == "fresh"
    finally:
        stores.close()


def test_a_daemon_that_no_longer_accepts_is_not_waited_for(stuck_listener):
    """Its listen queue full (a hung calico-node), connect() gives up after its timeout: the
    plugin then works in-process instead of hanging the runtime."""
    from calico_cni.agent import client

    assert client.connect(stuck_listener, timeout=0.3) is None


def test_an_exec_d_add_with_policy_enforced_and_no_daemon_fails_11(tmp_path):
    """calico-node's marker beside its socket, nothing answering: ADD of `calico` fails with 11
    naming calico-node (a pod made now would be dropped by its fail-closed dispatch); without the
    marker, or for another verb or calico-ipam, the request runs in-process."""
    import io

    from calico_cni.agent import client, wire

    path = str(tmp_path / "cni.sock")
    env = {"CNI_COMMAND": "ADD", wire.SOCKET_ENV: path}
    stdin = b'{"cniVersion": "1.0.0", "name": "net1", "type": "calico"}'

    def forward(plugin: str, environ: dict) -> tuple:
        real = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            return client.forward(plugin, environ)
        finally:
            sys.stdin = real

    assert forward("calico", env)[0] is None  # no marker: in-process
    (tmp_path / "policy-enforced").write_text("on\n")
    code, out, _ = forward("calico", env)
    answer = json.loads(out)
    assert code == 1 and answer["code"] == 11 and answer["msg"] == "calico-node did not answer"
    assert str(tmp_path / "policy-enforced") in answer["details"] and path in answer["details"]
    assert forward("calico", {**env, "CNI_COMMAND": "DEL"})[0] is None  # DEL must always work
    assert forward("calico-ipam", env)[0] is None


def test_with_the_socket_switched_off_the_default_marker_still_refuses_add(tmp_path, monkeypatch):
    """agent_socket "" (in-process on purpose) on a node whose calico-node enforces policy at the
    default place: ADD fails 11 saying the socket is switched off; DEL still runs in-process."""
    import io

    from calico_cni.agent import client, wire

    monkeypatch.setattr(wire, "DEFAULT_SOCKET", str(tmp_path / "cni.sock"))
    env = {"CNI_COMMAND": "ADD", wire.SOCKET_ENV: ""}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"cniVersion": "1.0.0", "name": "net1", "type": "calico"}')))
    assert client.forward("calico", env)[0] is None  # no marker
    (tmp_path / "policy-enforced").write_text("on\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"cniVersion": "1.0.0", "name": "net1", "type": "calico"}')))
    code, out, _ = client.forward("calico", env)
    assert code == 1 and json.loads(out)["code"] == 11 and "switched off" in json.loads(out)["details"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
    assert client.forward("calico", {**env, "CNI_COMMAND": "DEL"})[0] is None


def test_a_thread_may_serve_requests_one_after_another(tmp_path):
    """A thread that served one request (its handlers closed) serves the next: the logging of
    requests must not assume one thread per request."""
    import io
    import logging

    from calico_cni import logs

    with root_logging_restored():
        logs.setup_agent({"level": "warning", "path": str(tmp_path / "agent.log")}, "calico-cni-agent")
        outputs = []
        for n in range(2):
            stderr = io.StringIO()
            logs.start_request({"level": "info", "path": str(tmp_path / f"r{n}.log")}, f"calico ADD r{n}", stderr)
            logging.getLogger("calico_cni.test").warning("request %d", n)
            logs.end_request()
            logs.end_request()  # twice: nothing left to close
            outputs.append(stderr.getvalue())
        assert "request 0" in outputs[0] and "request 1" in outputs[1] and "request 0" not in outputs[1]



def test_the_block_memory_is_one_per_datastore():
    """A warm process's IPAM memory holds compare-and-swap tokens (block and handle revisions):
    requests to another etcd (another cluster, where a block of the same CIDR may carry the same
    revision) get a memory of their own; the same etcd with another call deadline shares one."""
    from calico_cni.config import EtcdSettings
    from calico_cni.plugins.services import Services

    services = Services.in_process()
    here = EtcdSettings(("http://198.19.0.1:2379", "http://198.19.0.2:2379"))
    same = EtcdSettings(("http://198.19.0.2:2379", "http://198.19.0.1:2379"), timeout=3.0)
    other = EtcdSettings(("http://198.19.9.1:2379",))
    assert services.memory(here) is services.memory(same)
    assert services.memory(here) is not services.memory(other)


def test_a_node_turn_not_given_by_the_deadline_is_try_again_later():
    """A node's IPAM requests in one process take turns (BlockMemory.node_lock): one that cannot
    get its turn before its datastore's deadline fails with TooManyConflicts (CNI error 11), and
    never waits past it."""
    import threading
    import time
    from types import SimpleNamespace

    import pytest

    from calico_cni.datastore.errors import TooManyConflicts
    from calico_cni.plugins.calico_ipam import _node_turn
    from calico_ipam.allocator import BlockMemory

    memory = BlockMemory()
    store = SimpleNamespace(client=SimpleNamespace(deadline_at=time.monotonic() + 0.2))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with _node_turn(store, memory, "node1"):
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        began = time.monotonic()
        with pytest.raises(TooManyConflicts, match="node node1"):
            with _node_turn(store, memory, "node1"):
                pass
        assert time.monotonic() - began < 1.0
        with _node_turn(store, memory, "node2"):  # another node's turn is not held up
            pass
    finally:
        release.set()
        t.join(5)
