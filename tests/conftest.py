"""Shared fixtures.

The tests follow the code's floors: `tests/unit` (pure: no root, no etcd, no namespace), then
`tests/etcd` (a real etcd), `tests/namespaces` (node and pod namespaces) and `tests/clients` (real CNI
clients, the installer, the demo). Only the last three run inside the "fabric" network namespace
the session creates (their conftest asks for `system`): etcd listens there (on loopback and on the
fabric address 198.19.0.1), the plugins the tests exec inherit it, and node namespaces created by
tests connect to it. The machine's own namespace is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import etcd_server, netns
from tests.processes import stop_process

FABRIC_ADDRESS = "198.19.0.1"
ETCD_PORT = 2379

# Fixtures for every test module: node, nodes, pod, calico_conf (node namespaces and the `calico`
# config) and agents (per-node calico-cni-agents).
pytest_plugins = ["tests.calico_support", "tests.agent_support", "tests.calicoctl_support", "tests.security_support"]


def _install_launchers() -> Path:
    """The executables under test, as install-cni.sh installs them (calico_cni/launcher.py: the
    venv's interpreter as `python -I -S`), in a directory of this session, removed at exit."""
    import atexit
    import tempfile

    from calico_cni.launcher import write_all

    directory = Path(tempfile.mkdtemp(prefix="calico-cni-bin-"))
    directory.chmod(0o755)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    write_all(str(directory))
    return directory


BIN_DIR = _install_launchers()


# CALICO_TEST_VIA_AGENT=1 (scripts/run-tests.sh's second pass): only the modules marked
# `execs_plugins` run, and every plugin a test execs hands its request to one calico-cni-agent of
# the session, which serves every namespace; otherwise they run in-process. The same tests must
# pass both ways.
VIA_AGENT = os.environ.get("CALICO_TEST_VIA_AGENT") == "1"
_session_agent: dict = {}
_session_problems: list[str] = []  # reported by pytest_sessionfinish


def plugin_env() -> dict[str, str]:
    """The environment every plugin exec'd by a test starts from: PATH, the session's own
    release journal directory (so tests never write to /var/lib/calico), and the agent socket:
    empty (in-process, even where a host agent runs) or the session agent's in VIA_AGENT mode.
    Tests of the agent itself point it at their own agent."""
    env = {"PATH": os.environ.get("PATH", ""), "CALICO_CNI_AGENT_SOCKET": _session_agent.get("socket", "")}
    if os.environ.get("CALICO_RELEASE_JOURNAL_DIR"):
        env["CALICO_RELEASE_JOURNAL_DIR"] = os.environ["CALICO_RELEASE_JOURNAL_DIR"]
    return env


@pytest.fixture(scope="session")
def release_journal(tmp_path_factory):
    """Plugins and calicoctl run by tests journal into a session directory, removed at the end.
    A run that wrote the machine's own journal or log directory (a request built without the
    plugin environment or a log_file_path, say) fails, and what it wrote there is removed."""
    from calico_cni.config import DEFAULT_JOURNAL_DIR

    machine_dirs = [os.path.dirname(DEFAULT_JOURNAL_DIR), "/var/log/calico"]  # /var/lib/calico
    absent = [d for d in machine_dirs if not os.path.exists(d)]
    path = tmp_path_factory.mktemp("release-journal")
    previous = os.environ.get("CALICO_RELEASE_JOURNAL_DIR")
    os.environ["CALICO_RELEASE_JOURNAL_DIR"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("CALICO_RELEASE_JOURNAL_DIR", None)
        else:
            os.environ["CALICO_RELEASE_JOURNAL_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)
        for machine_dir in absent:
            if os.path.exists(machine_dir):
                written = sorted(os.path.relpath(os.path.join(d, f), machine_dir) for d, _, fs in os.walk(machine_dir) for f in fs)
                _session_problems.append(f"the tests wrote the machine's {machine_dir} (removed now): {written[:5]}")
                shutil.rmtree(machine_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def fabric():
    """The namespace the test session runs in (holds etcd and every node's uplink)."""
    if os.geteuid() != 0:
        pytest.exit("the tests need root: they create network namespaces", returncode=2)
    netns.sweep_stale()
    name = netns.add(f"{netns.PREFIX}fabric-{os.getpid()}")
    netns.ip("-n", name, "addr", "add", f"{FABRIC_ADDRESS}/32", "dev", "lo")
    try:
        with netns.inside(name):
            yield name
    finally:
        netns.delete(name)


@pytest.fixture(scope="session")
def session_agent(fabric, release_journal, tmp_path_factory):
    """In VIA_AGENT mode, the agent every plugin exec goes through, started in the fabric (where
    etcd is) and checked at the end: still running, and it served requests."""
    if not VIA_AGENT:
        yield None
        return
    directory = tmp_path_factory.mktemp("session-agent")
    sock = str(directory / "run" / "cni.sock")
    log = directory / "agent.log"
    env = {k: v for k, v in plugin_env().items() if k != "CALICO_CNI_AGENT_SOCKET"}
    proc = subprocess.Popen([plugin_path("calico-cni-agent"), "--socket", sock, "--log-file", str(log)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def health() -> dict | None:
        answer = subprocess.run([plugin_path("calico-cni-agent"), "health", "--socket", sock], capture_output=True, text=True, timeout=30)
        return json.loads(answer.stdout) if answer.returncode == 0 else None

    try:
        for _ in range(300):
            if proc.poll() is not None or (os.path.exists(sock) and health()):
                break
            time.sleep(0.1)
        if proc.poll() is not None or not health():
            pytest.exit(f"the session's calico-cni-agent did not start (rc={proc.poll()}); see {log}", returncode=3)
        _session_agent["socket"] = sock
        yield sock
        state = health()
        _session_agent.clear()
        if proc.poll() is not None or state is None:
            _session_problems.append(f"the session's calico-cni-agent died during the tests (rc={proc.poll()}); see {log}")
        elif state["served"] == 0:
            _session_problems.append("CALICO_TEST_VIA_AGENT=1 but the session's agent served no request")
    finally:
        _session_agent.pop("socket", None)
        stop_process(proc, 60, 10)


@pytest.fixture(scope="session")
def system(fabric, release_journal, session_agent):
    """What every test beyond tests/unit runs in: root, the fabric namespace, the session's release
    journal directory and (in VIA_AGENT mode) the session agent. Requested by the autouse fixture
    of tests/etcd, tests/namespaces and tests/clients, so pure tests need none of it."""
    return fabric


def pytest_configure(config):
    config.addinivalue_line("markers", "execs_plugins: the module execs the plugins; CALICO_TEST_VIA_AGENT=1 runs it through the agent")


def pytest_collection_modifyitems(config, items):
    """In VIA_AGENT mode only the tests that exec plugins run (the rest would run the same way)."""
    if not VIA_AGENT:
        return
    keep = [item for item in items if item.get_closest_marker("execs_plugins")]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not item.get_closest_marker("execs_plugins")])
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    """What session fixtures found at their end fails the run (the tests alone would not notice):
    a dead or idle session agent, writes to the machine's journal directory."""
    for problem in _session_problems:
        session.config.get_terminal_writer().line(f"ERROR: {problem}", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def etcd(fabric, tmp_path_factory):
    """A real etcd for the session, on the fabric address."""
    server = etcd_server.start(FABRIC_ADDRESS, ETCD_PORT, log_dir=str(tmp_path_factory.mktemp("etcd")))
    try:
        yield server
    finally:
        server.stop()


def wipe(endpoint: str) -> None:
    """Delete every key in etcd."""
    import pyetcd

    host, port = endpoint.split("://")[1].rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=5)
    try:
        client.delete_prefix("/")
    finally:
        client.close()


@pytest.fixture
def etcd_endpoint(etcd) -> str:
    """The endpoint of an empty etcd (every key is removed before the test)."""
    wipe(etcd.endpoint)
    return etcd.endpoint


@pytest.fixture
def store(etcd_endpoint):
    """A Datastore on the empty test etcd."""
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    ds = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
    yield ds
    ds.close()


@dataclass
class PluginRun:
    """What a plugin executable did: exit code, parsed stdout, raw stderr."""

    rc: int
    out: dict | None
    stdout: str
    stderr: str


def plugin_path(name: str) -> str:
    """The installed executable (a launcher as install-cni.sh writes it; see _install_launchers)."""
    path = BIN_DIR / name
    return str(path) if path.exists() else shutil.which(name)


def run_plugin(name: str, command: str, config: dict | bytes | str, env: dict | None = None, timeout: float = 60,
               netns_path: str | None = None) -> PluginRun:
    """Exec a plugin as a runtime does: CNI_* environment and the config on stdin; with `netns_path`,
    inside that network namespace (nsenter)."""
    stdin = config if isinstance(config, (bytes, str)) else json.dumps(config)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    full_env = {**plugin_env(), "CNI_COMMAND": command}
    full_env.update(env or {})
    argv = [plugin_path(name)] if netns_path is None else ["nsenter", f"--net={netns_path}", plugin_path(name)]
    proc = subprocess.run(argv, input=stdin, env=full_env, capture_output=True, timeout=timeout)
    stdout = proc.stdout.decode()
    try:
        out = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        out = None
    return PluginRun(proc.returncode, out, stdout, proc.stderr.decode())


@pytest.fixture
def ipam_conf(etcd_endpoint, tmp_path):
    """A calico-ipam network config factory on the test etcd."""

    def make(cni_version: str = "1.0.0", name: str = "net1", node: str = "node1", **ipam) -> dict:
        return {
            "cniVersion": cni_version,
            "name": name,
            "type": "calico-ipam",
            "etcd_endpoints": etcd_endpoint,
            "nodename": node,
            "log_file_path": str(tmp_path / "cni.log"),
            "log_level": "debug",
            "ipam": {"type": "calico-ipam", **ipam},
        }

    return make


def cni_env(container_id: str = "c1", ifname: str = "eth0", netns_path: str = "/var/run/netns/none", **extra: str) -> dict:
    """CNI_* variables for an attachment."""
    env = {
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(BIN_DIR) + ":/usr/lib/cni",
    }
    env.update(extra)
    return env
