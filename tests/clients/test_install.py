"""scripts/install-cni.sh, the node installer, run for real into temporary directories.

One installation per module (it creates a virtual environment and pip-installs the project, about
ten seconds): its files, the installed plugins driven by cnitool inside a node namespace, a second
run that changes nothing, and --uninstall. The installer runs from the test process, in the fabric
namespace, where the session's etcd listens: its forwarding, MTU and etcd checks read that namespace.
The fabric has no way out to PyPI: the installer's pip installs offline from wheels downloaded
beforehand (tests/clients/wheels.py).

The tests run in file order (the last uninstalls); each one reinstalls first if an earlier test
uninstalled, so any of them can also run alone.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.calico_support import held_addresses
from tests.conftest import FABRIC_ADDRESS
from tests.clients import harness
from tests.clients.conftest import REPO
from tests.clients.harness import (
    SHAPING,
    ClientRun,
    Node,
    cnitool,
    cnitool_attachment,
    cnitool_container_id,
    has_link,
    http_get,
    http_server,
    run_in,
)
from tests.clients.wheels import download_wheels, offline_pip_env
from tests.pools import create_pool

INSTALLER = REPO / "scripts" / "install-cni.sh"
ETCD_ENDPOINT = f"http://{FABRIC_ADDRESS}:2379"
NETWORK = "calico"  # the name in conf/10-calico.conflist
FOREIGN_PLUGIN = "someone-elses-plugin"  # in the bin dir before the installer runs: never touched


@dataclass
class Installation:
    """The directories given to the installer, its node, and what its runs printed."""

    root: Path
    node: Node
    wheelhouse: Path
    runs: list[ClientRun] = field(default_factory=list)
    installed: bool = False
    install_run: ClientRun | None = None  # the run that installed
    before_install: dict[str, tuple] = field(default_factory=dict)  # snapshot() of root before it

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "calico-cni"

    @property
    def bin_dir(self) -> Path:
        return self.root / "cni" / "bin"  # exists beforehand, holding FOREIGN_PLUGIN

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc" / "cni" / "net.d"  # created by the installer

    @property
    def ctl_dir(self) -> Path:
        return self.root / "usr" / "bin"  # created by the installer

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "cni.log"  # written by the plugins, not by the installer

    @property
    def conflist(self) -> Path:
        return self.conf_dir / "10-calico.conflist"

    @property
    def manifest(self) -> Path:
        return self.prefix / "installed-files"

    def run(self, *extra: str) -> ClientRun:
        """Run the installer with this installation's options (and `extra`)."""
        argv = [
            "bash", str(INSTALLER),
            "--prefix", str(self.prefix),
            "--bin-dir", str(self.bin_dir),
            "--conf-dir", str(self.conf_dir),
            "--calicoctl-dir", str(self.ctl_dir),
            "--etcd-endpoints", ETCD_ENDPOINT,
            "--nodename", self.node.name,
            "--log-file", str(self.log_file),
            *extra,
        ]
        # Only PATH and HOME: no ETCD_* or CNI_* variable of the caller may change the defaults.
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            **offline_pip_env(self.wheelhouse),
        }
        run = harness.run_in(None, argv, env=env, timeout=600)
        self.runs.append(run)
        return run

    def ensure_installed(self) -> ClientRun:
        """The run that installed (installing again if a test uninstalled)."""
        if not self.installed:
            self.run().ok()
            self.installed = True
            self.install_run = self.runs[-1]
        return self.install_run


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: type, mode, mtime, and the content hash (files) or target (links)."""
    entries: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                detail = None
            entries[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, detail)
    return entries


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> dict[str, tuple]:
    return {p: (before.get(p), after.get(p)) for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


@pytest.fixture(scope="module")
def installation(fabric, etcd, tmp_path_factory):
    """scripts/install-cni.sh run once into a temporary root, for a node namespace on the fabric;
    uninstalled (if a test did not) and removed afterwards, with the node."""
    root = tmp_path_factory.mktemp("install-cni")
    wheelhouse = tmp_path_factory.mktemp("install-cni-wheels")
    node = harness.create_node(fabric)
    inst = Installation(root, node, wheelhouse)
    try:
        download_wheels(wheelhouse)
        inst.bin_dir.mkdir(parents=True)
        (inst.bin_dir / FOREIGN_PLUGIN).write_text("#!/bin/sh\nexit 0\n")
        inst.before_install = snapshot(root)
        inst.ensure_installed()
        yield inst
    finally:
        try:
            if inst.installed:
                inst.run("--uninstall")
        finally:
            harness.delete_node(node)
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(wheelhouse, ignore_errors=True)


def shebang(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline().decode().rstrip("\n")


def test_installed_files(installation):
    """The plugins and calicoctl start with the venv's interpreter (a real binary, no pyenv shim) and
    import the project from the venv; portmap and bandwidth are linked from /usr/lib/cni; the
    conflist is 0600, valid, and has every placeholder filled; the node's checks found etcd."""
    inst = installation
    out = inst.ensure_installed().stdout
    assert "calico CNI installed" in out and f"node {inst.node.name}" in out, out
    assert "warning" not in out, f"etcd answers and portmap/bandwidth exist: {out}"

    venv_python = inst.prefix / "bin" / "python"
    for path in (inst.bin_dir / "calico", inst.bin_dir / "calico-ipam", inst.ctl_dir / "calicoctl", inst.ctl_dir / "calico-cni-agent"):
        assert shebang(path) == f"#!{venv_python} -IS", path  # no site: calico_cni/launcher.py
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
        assert str(inst.prefix / "lib") in path.read_text() and str(REPO) not in path.read_text()
    version = run_in(None, [str(inst.bin_dir / "calico")], env={"CNI_COMMAND": "VERSION", "CALICO_CNI_AGENT_SOCKET": ""})
    assert "1.1.0" in version.ok().json()["supportedVersions"]
    real = Path(os.path.realpath(venv_python))
    assert "shims" not in real.parts and real.read_bytes()[:4] == b"\x7fELF", f"{venv_python} -> {real}"
    where = run_in(None, [str(venv_python), "-I", "-c", "import sys, calico_cni, calico_ipam; print(sys.prefix, calico_cni.__file__, calico_ipam.__file__)"])
    prefix, *modules = where.ok().stdout.split()
    assert prefix == str(inst.prefix)
    assert all(m.startswith(str(inst.prefix / "lib")) for m in modules), f"not the checkout: {modules}"
    for plugin in ("portmap", "bandwidth"):
        assert os.readlink(inst.bin_dir / plugin) == f"/usr/lib/cni/{plugin}"

    assert stat.S_IMODE(inst.conflist.stat().st_mode) == 0o600
    text = inst.conflist.read_text()
    assert "__" not in text, f"a placeholder is left: {text}"
    conf = json.loads(text)
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == NETWORK
    calico, portmap, bandwidth = conf["plugins"]
    assert calico["type"] == "calico" and calico["ipam"]["type"] == "calico-ipam"
    assert calico["etcd_endpoints"] == ETCD_ENDPOINT
    assert calico["nodename"] == inst.node.name
    assert calico["log_file_path"] == str(inst.log_file)
    assert not {"etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file", "mtu", "agent_socket"} & calico.keys(), "unset options leave no key"
    assert "start the agent" in out and f"{inst.ctl_dir}/calico-cni-agent --socket /var/run/calico/cni.sock &" in out, out
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    assert bandwidth == {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    assert (inst.bin_dir / FOREIGN_PLUGIN).read_text() == "#!/bin/sh\nexit 0\n"


def test_installed_plugins_through_cnitool(installation, cnitool_bin, store, make_netns, tmp_path):
    """cnitool add/check/del with the installed conflist and only the installed bin dir on CNI_PATH,
    inside the node the installation is for: the pod gets a pool address on that node, the host port
    reaches its server, the installed calicoctl (reading the installed conflist) sees the allocation,
    CHECK passes, and DEL leaves no link, endpoint, handle or allocation."""
    inst = installation
    inst.ensure_installed()
    node = inst.node
    create_pool(store, "install-pool", "198.18.20.0/24")
    pod = make_netns()
    ports = [{"hostPort": 18081, "containerPort": 8080, "protocol": "tcp"}]
    common = dict(node=node, netconf_dir=inst.conf_dir, cni_path=str(inst.bin_dir))

    with cnitool_attachment(NETWORK, pod, cap_args={"portMappings": ports, "bandwidth": SHAPING}, **common) as added:
        result = added.json()
        (ip,) = result["ips"]
        pod_ip = str(ipaddress.ip_interface(ip["address"]).ip)
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network("198.18.20.0/24")
        (endpoint,) = store.workload_endpoints()
        assert endpoint.node == node.name and endpoint.container_id == cnitool_container_id(pod)
        log = inst.log_file.read_text()  # the installed conflist's log file
        assert "calico ADD" in log and f"{pod_ip}/32" in log, log
        with http_server(pod, tmp_path / "www", "installed\n", port=8080):
            assert http_get(None, f"http://{node.address}:18081/").ok().stdout == "installed\n"

        shown = run_in(None, [str(inst.ctl_dir / "calicoctl"), "--config", str(inst.conflist), "ipam", "show", "--show-blocks"]).ok()
        assert "198.18.20.0/24" in shown.stdout, shown.describe()

        cnitool("check", NETWORK, pod, cap_args={"bandwidth": SHAPING}, **common).ok()
        cnitool("del", NETWORK, pod, cap_args={"portMappings": ports, "bandwidth": SHAPING}, **common).ok()
        assert not has_link(pod, "eth0")
        assert [link["ifname"] for link in run_in(node.path, ["ip", "-j", "link", "show"]).json()] == ["lo", node.uplink]
        assert store.workload_endpoints() == [] and store.handles() == [] and held_addresses(store) == {}


def test_second_run_changes_nothing(installation):
    """The installer run again with the same options says nothing changed and changes no file or
    directory (content, mode, mtime) under the installation's root."""
    inst = installation
    inst.ensure_installed()
    before = snapshot(inst.root)
    again = inst.run().ok()
    assert "already installed and up to date; nothing changed" in again.stdout, again.describe()
    for word in ("wrote", "linked", "created", "installed the"):
        assert word not in again.stdout, again.describe()
    assert changed(before, snapshot(inst.root)) == {}


def test_agent_installed_and_serving(installation, cnitool_bin, store, make_netns, tmp_path):
    """With --agent-socket and --unit-dir: the conflist names the socket, the unit is written (not
    enabled: it is not systemd's directory) with the command the installer prints, and that command
    run in the node serves the installed plugins driven by cnitool."""
    inst = installation
    inst.ensure_installed()
    sock = tmp_path / "run" / "cni.sock"  # made by the agent, not the installer
    unit_dir = inst.root / "etc" / "systemd" / "system"
    out = inst.run("--agent-socket", str(sock), "--unit-dir", str(unit_dir)).ok().stdout
    command = f"{inst.ctl_dir}/calico-cni-agent --socket {sock}"
    assert f"    {command} &" in out and "written, not enabled" in out, out
    unit = unit_dir / "calico-cni-agent.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert f"ExecStart={command}\n" in unit.read_text() and "Restart=always" in unit.read_text()
    assert json.loads(inst.conflist.read_text())["plugins"][0]["agent_socket"] == str(sock)

    from tests.agent_support import Agent, wait_healthy

    proc = harness.popen_in(inst.node.path, command.split())
    agent = Agent(proc, str(sock), tmp_path / "unused.log", binary=str(inst.ctl_dir / "calico-cni-agent"))
    try:
        wait_healthy(agent)
        create_pool(store, "install-agent-pool", "198.18.21.0/24")
        pod = make_netns()
        # (The tests' plugin environment switches the agent off; here it names the installed one.)
        common = dict(node=inst.node, netconf_dir=inst.conf_dir, cni_path=str(inst.bin_dir), env={"CALICO_CNI_AGENT_SOCKET": str(sock)})
        with cnitool_attachment(NETWORK, pod, **common) as added:
            (ip,) = added.json()["ips"]
            assert ipaddress.ip_interface(ip["address"]).ip in ipaddress.ip_network("198.18.21.0/24")
            assert agent.served() == 1
        assert agent.served() == 2  # the DEL too
        assert store.workload_endpoints() == [] and held_addresses(store) == {}
    finally:
        agent.stop()


def test_uninstall_removes_what_was_installed(installation):
    """--uninstall removes every installed file, the virtual environment and the directories the
    installer created; what was there before (the bin dir and a plugin in it) stays, and so does the
    plugins' log. A second --uninstall has nothing to do."""
    inst = installation
    inst.ensure_installed()
    listed = [line for line in inst.manifest.read_text().splitlines() if line and not line.endswith("/")]
    names = sorted(Path(p).name for p in listed)
    base = ["calico", "calico-ipam", "calicoctl", "calico-cni-agent", "portmap", "bandwidth", "10-calico.conflist"]
    # The agent's unit is listed when the last run wrote it (test_agent_installed_and_serving).
    assert names in (sorted(base), sorted([*base, "calico-cni-agent.service"])), names

    removed = inst.run("--uninstall").ok()
    inst.installed = False
    for path in listed:
        assert not os.path.lexists(path), removed.describe()
    left = snapshot(inst.root)
    log_dir = str(inst.log_file.parent.relative_to(inst.root))
    extra = sorted(p for p in left.keys() - inst.before_install.keys() if p != log_dir and not p.startswith(log_dir + "/"))
    assert extra == [], removed.describe()
    assert changed({p: inst.before_install[p] for p in inst.before_install if p != "cni/bin"},
                   {p: left.get(p) for p in inst.before_install if p != "cni/bin"}) == {}, "what was there before is untouched"
    assert os.listdir(inst.bin_dir) == [FOREIGN_PLUGIN]

    again = inst.run("--uninstall").ok()
    assert "nothing to uninstall" in again.stdout, again.describe()


def run_installer(*args: str, env: dict[str, str] | None = None) -> ClientRun:
    """The installer with only PATH and HOME (and `env`) in its environment."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": os.environ.get("HOME", "/root"), **(env or {})}
    return harness.run_in(None, ["bash", str(INSTALLER), *args], env=full_env, timeout=120)


@pytest.mark.parametrize(
    "args, env, rc, message",
    [
        (["--bogus"], {}, 2, "unknown option --bogus"),
        (["--agent-socket", "run/cni.sock"], {}, 1, "--agent-socket must be an absolute path, got run/cni.sock"),
        ([], {"CALICO_CNI_AGENT": "yes"}, 1, "CALICO_CNI_AGENT must be true or false, got yes"),
        (["--python", "/bin/false"], {}, 1, "/bin/false is not Python 3.11 or newer"),
        (["--mtu", "big"], {}, 1, "--mtu must be a number, got big"),
    ],
)
def test_bad_option_fails_and_writes_nothing(tmp_path, args, env, rc, message):
    """A bad option or setting ends the installer with its message before anything is written."""
    dirs = ["--prefix", str(tmp_path / "opt"), "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"),
            "--calicoctl-dir", str(tmp_path / "ctl"), "--unit-dir", str(tmp_path / "units")]
    run = run_installer(*dirs, *args, env=env)
    assert run.rc == rc and message in run.stderr, run.describe()
    assert os.listdir(tmp_path) == [], run.describe()


def test_prefix_of_something_else_is_refused(tmp_path):
    """A non-empty --prefix that is not a virtual environment is refused and left as it was."""
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "data").write_text("someone else's\n")
    before = snapshot(tmp_path)
    run = run_installer("--prefix", str(prefix), "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"))
    assert run.rc == 1 and "is not a calico-cni installation" in run.stderr, run.describe()
    assert changed(before, snapshot(tmp_path)) == {}


def test_uninstall_keeps_a_prefix_that_is_not_a_venv(tmp_path):
    """--uninstall with a manifest in a prefix that is not a virtual environment removes the listed
    files and (empty) directories and the manifest, and keeps the prefix with what else it holds."""
    prefix, made = tmp_path / "opt", tmp_path / "made" / "deeper"
    prefix.mkdir()
    made.mkdir(parents=True)
    (made / "file").write_text("x")
    (prefix / "other").write_text("kept\n")
    (prefix / "installed-files").write_text(f"{made / 'file'}\n{tmp_path / 'made'}/\n{made}/\n")
    run = run_installer("--prefix", str(prefix), "--uninstall").ok()
    assert f"kept {prefix}: it is not a virtual environment" in run.stdout, run.describe()
    assert sorted(os.listdir(tmp_path)) == ["opt"] and os.listdir(prefix) == ["other"], run.describe()
