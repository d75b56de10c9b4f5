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
import signal
import socket
import stat
import subprocess
from contextlib import contextmanager
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

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "system"  # created by the installer

    @property
    def env_file(self) -> Path:
        return self.root / "etc" / "calico" / "calico-node.env"  # created by the installer

    def run(self, *extra: str, env: dict[str, str] | None = None) -> ClientRun:
        """Run the installer with this installation's options (and `extra`, and `env` added to
        its environment)."""
        argv = [
            "bash", str(INSTALLER),
            "--prefix", str(self.prefix),
            "--bin-dir", str(self.bin_dir),
            "--conf-dir", str(self.conf_dir),
            "--calicoctl-dir", str(self.ctl_dir),
            "--etcd-endpoints", ETCD_ENDPOINT,
            "--nodename", self.node.name,
            "--log-file", str(self.log_file),
            # Never the machine's /etc: calico-node's unit, its settings and Debian's masked
            # bird.service (no systemd runs here) all go under the root.
            "--unit-dir", str(self.unit_dir),
            "--node-env-file", str(self.env_file),
            *extra,
        ]
        # Only PATH and HOME: no ETCD_* or CNI_* variable of the caller may change the defaults.
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            **offline_pip_env(self.wheelhouse),
            **(env or {}),
        }
        run = harness.run_in(None, argv, env=full_env, timeout=600)
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
    """The plugins, calicoctl and calico-node start with the venv's interpreter (a real binary, no
    pyenv shim) and import the project from the venv; portmap and bandwidth are linked from
    /usr/lib/cni; the conflist is 0600, valid, and has every placeholder filled; the node's checks
    found etcd."""
    inst = installation
    out = inst.ensure_installed().stdout
    assert "calico CNI installed" in out and f"node {inst.node.name}" in out, out
    assert "warning" not in out, f"etcd answers and portmap/bandwidth exist: {out}"

    venv_python = inst.prefix / "bin" / "python"
    for path in (inst.bin_dir / "calico", inst.bin_dir / "calico-ipam", inst.ctl_dir / "calicoctl", inst.ctl_dir / "calico-node"):
        assert shebang(path) == f"#!{venv_python} -IS", path  # no site: calico_cni/launcher.py
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
        assert str(inst.prefix / "lib") in path.read_text() and str(REPO) not in path.read_text()
    assert "from calico_cni.node.main import main" in (inst.ctl_dir / "calico-node").read_text()
    assert not os.path.lexists(inst.ctl_dir / "calico-cni-agent"), "calico-node replaces the agent"
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
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    assert bandwidth == {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    assert (inst.bin_dir / FOREIGN_PLUGIN).read_text() == "#!/bin/sh\nexit 0\n"


def test_calico_node_unit_and_settings(installation):
    """calico-node's unit (written: --unit-dir, not enabled: no systemd) runs the launcher with the
    environment file, after the network is online, restarted always, and stops only calico-node
    (KillMode=process: BIRD keeps the routes). The environment file is 0600 and holds the etcd and
    node settings, single-quoted; the installer prints the command that starts calico-node with it."""
    inst = installation
    out = inst.ensure_installed().stdout
    unit = inst.unit_dir / "calico-node.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    lines = unit.read_text().splitlines()
    for line in ("Type=simple", f"ExecStart={inst.ctl_dir}/calico-node", f"EnvironmentFile={inst.env_file}",
                 "KillMode=process", "Restart=always", "After=network-online.target", "WantedBy=multi-user.target"):
        assert line in lines, f"{line!r} not in {unit}:\n{unit.read_text()}"
    assert not os.path.lexists(inst.unit_dir / "calico-cni-agent.service")

    assert stat.S_IMODE(inst.env_file.stat().st_mode) == 0o600
    settings = [line for line in inst.env_file.read_text().splitlines() if not line.startswith("#")]
    assert settings == [
        "DATASTORE_TYPE='etcdv3'",
        f"ETCD_ENDPOINTS='{ETCD_ENDPOINT}'",
        f"NODENAME='{inst.node.name}'",
        "CALICO_RUN_DIR='/var/run/calico'",
        "CALICO_STATE_DIR='/var/lib/calico'",
        # calico-node reads the installed network configuration (it warns about an mtu above
        # what the encapsulation leaves room for).
        f"CNI_NET_DIR='{inst.conf_dir}'",
    ], inst.env_file.read_text()
    assert f"{inst.unit_dir}/calico-node.service is written, not enabled" in out, out
    assert f"    sh -ac '. {inst.env_file}; exec {inst.ctl_dir}/calico-node' &" in out, out


def test_debian_bird_service_masked(installation):
    """With no systemd running, Debian's bird.service is masked the way systemctl masks it: a link
    to /dev/null in the unit directory the installer writes to, recorded in the manifest as its own."""
    inst = installation
    out = inst.ensure_installed().stdout
    mask = inst.unit_dir / "bird.service"
    assert os.readlink(mask) == "/dev/null"
    assert f"masked Debian's bird.service: {mask} -> /dev/null" in out, out
    assert f"mask:{mask}" in inst.manifest.read_text().splitlines()


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


def test_changed_settings_say_a_running_calico_node_keeps_the_old_ones(installation):
    """calico-node reads its environment file only when it starts: a run that changes it says so
    (where systemd runs, it restarts the unit instead); a run that changes nothing does not."""
    inst = installation
    inst.ensure_installed()
    notice = "a calico-node that is already running keeps its previous settings until it is restarted"
    try:
        changed_run = inst.run("--as", "64600").ok()
        assert "AS='64600'" in inst.env_file.read_text().splitlines() and notice in changed_run.stdout, changed_run.describe()
        again = inst.run("--as", "64600").ok()
        assert notice not in again.stdout, again.describe()
    finally:
        inst.run().ok()


def stop_bird(run_dir: Path) -> None:
    """Stop the BIRD a calico-node started on `run_dir` (it outlives calico-node by design): its
    pid file names it; SIGKILL, then wait until it is gone."""
    try:
        pid = int((run_dir / "bird.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        if f"{run_dir}/bird.ctl" not in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
            return  # not that BIRD (its pid was reused)
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        return
    harness.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), f"BIRD {pid} to exit", attempts=100)


def test_calico_node_installed_and_serving(installation, cnitool_bin, store, make_netns, tmp_path):
    """With --run-dir, --state-dir and --ip (and NO_DEFAULT_POOLS in the installer's environment):
    the conflist names calico-node's socket, the environment file carries those settings, and the
    command the installer prints, run in the node, registers the node (the Node with its address,
    the nodename file in the state directory), starts BIRD on the run directory's socket, and
    serves the installed plugins driven by cnitool."""
    inst = installation
    inst.ensure_installed()
    run_dir, state_dir = tmp_path / "run", tmp_path / "state"  # made by calico-node
    address = f"{inst.node.address}/32"
    out = inst.run("--run-dir", str(run_dir), "--state-dir", str(state_dir), "--ip", address, env={"NO_DEFAULT_POOLS": "true"}).ok().stdout
    script = f". {inst.env_file}; exec {inst.ctl_dir}/calico-node"
    assert f"    sh -ac '{script}' &" in out, out
    sock = run_dir / "cni.sock"
    assert json.loads(inst.conflist.read_text())["plugins"][0]["agent_socket"] == str(sock)
    settings = inst.env_file.read_text().splitlines()
    for line in (f"CALICO_RUN_DIR='{run_dir}'", f"CALICO_STATE_DIR='{state_dir}'", f"IP='{address}'", "NO_DEFAULT_POOLS='true'"):
        assert line in settings, inst.env_file.read_text()

    from tests.agent_support import Agent, wait_healthy

    log = tmp_path / "calico-node.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(harness.in_netns(inst.node.path, ["sh", "-ac", script]), env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Agent(proc, str(sock), log)
    try:
        wait_healthy(daemon)
        nodename_file = state_dir / "nodename"
        harness.wait_until(lambda: nodename_file.exists() and nodename_file.read_text().strip() == inst.node.name, "the nodename file", attempts=100)
        harness.wait_until(lambda: (run_dir / "bird.ctl").exists(), "BIRD's control socket", attempts=100)
        nodes = run_in(None, [str(inst.ctl_dir / "calicoctl"), "--config", str(inst.conflist), "get", "nodes", "-o", "wide"]).ok()
        assert any(line.split()[:1] == [inst.node.name] and address in line.split() for line in nodes.stdout.splitlines()), nodes.describe()

        create_pool(store, "install-node-pool", "198.18.21.0/24")
        pod = make_netns()
        # (The tests' plugin environment switches the socket off; here it names calico-node's.)
        common = dict(node=inst.node, netconf_dir=inst.conf_dir, cni_path=str(inst.bin_dir), env={"CALICO_CNI_AGENT_SOCKET": str(sock)})
        with cnitool_attachment(NETWORK, pod, **common) as added:
            (ip,) = added.json()["ips"]
            assert ipaddress.ip_interface(ip["address"]).ip in ipaddress.ip_network("198.18.21.0/24")
            assert daemon.served() == 1
        assert daemon.served() == 2  # the DEL too
        assert store.workload_endpoints() == [] and held_addresses(store) == {}
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        daemon.stop()
        stop_bird(run_dir)


def test_old_agent_unit_is_replaced(installation):
    """An installation an earlier version made (its manifest lists the calico-cni-agent launcher and
    unit): the installer removes both, says so, and leaves calico-node's unit in their place; the
    manifest no longer lists them. A calico-cni-agent.service it did not install is left, with a
    warning (never two daemons on the plugins' socket)."""
    inst = installation
    inst.ensure_installed()
    old_unit = inst.unit_dir / "calico-cni-agent.service"
    old_launcher = inst.ctl_dir / "calico-cni-agent"
    old_unit.write_text("[Service]\nExecStart=/usr/local/bin/calico-cni-agent --socket /var/run/calico/cni.sock\n")
    old_launcher.write_text("#!/bin/sh\n")
    listed = inst.manifest.read_text()
    inst.manifest.write_text(f"{old_launcher}\n{old_unit}\n{listed}")

    out = inst.run().ok().stdout
    assert f"removed {old_unit} (calico-node replaces calico-cni-agent)" in out, out
    assert f"removed {old_launcher} (calico-node replaces calico-cni-agent)" in out, out
    assert not os.path.lexists(old_unit) and not os.path.lexists(old_launcher)
    assert (inst.unit_dir / "calico-node.service").is_file()
    assert {str(old_unit), str(old_launcher)}.isdisjoint(inst.manifest.read_text().splitlines())

    old_unit.write_text("[Service]\n")  # someone else's: not in the manifest
    try:
        out = inst.run().ok().stdout
        assert f"warning: {old_unit} was not installed by this installer" in out, out
        assert old_unit.read_text() == "[Service]\n"
    finally:
        old_unit.unlink()


def test_uninstall_removes_what_was_installed(installation):
    """--uninstall removes every installed file, the virtual environment and the directories the
    installer created, both daemons' units (calico-node's, and the calico-cni-agent unit an earlier
    version installed) and the mask of bird.service; what was there before (the bin dir and a plugin
    in it) stays, and so does the plugins' log. A second --uninstall has nothing to do."""
    inst = installation
    inst.ensure_installed()
    listed = [line for line in inst.manifest.read_text().splitlines() if line and not line.endswith("/") and not line.startswith("mask:")]
    names = sorted(Path(p).name for p in listed)
    assert names == sorted(["calico", "calico-ipam", "calicoctl", "calico-node", "portmap", "bandwidth", "10-calico.conflist",
                            "calico-node.env", "calico-node.service"]), names
    # As an installation of an earlier version that was upgraded in place would list it.
    old_unit = inst.unit_dir / "calico-cni-agent.service"
    old_unit.write_text("[Service]\n")
    inst.manifest.write_text(f"{old_unit}\n{inst.manifest.read_text()}")
    mask = inst.unit_dir / "bird.service"
    assert os.readlink(mask) == "/dev/null"

    removed = inst.run("--uninstall").ok()
    inst.installed = False
    for path in [*listed, old_unit, inst.unit_dir / "calico-node.service"]:
        assert not os.path.lexists(path), removed.describe()
    assert not os.path.lexists(mask), removed.describe()
    assert f"unmasked bird.service (removed the link {mask} -> /dev/null)" in removed.stdout, removed.describe()
    left = snapshot(inst.root)
    log_dir = str(inst.log_file.parent.relative_to(inst.root))
    extra = sorted(p for p in left.keys() - inst.before_install.keys() if p != log_dir and not p.startswith(log_dir + "/"))
    assert extra == [], removed.describe()
    assert changed({p: inst.before_install[p] for p in inst.before_install if p != "cni/bin"},
                   {p: left.get(p) for p in inst.before_install if p != "cni/bin"}) == {}, "what was there before is untouched"
    assert os.listdir(inst.bin_dir) == [FOREIGN_PLUGIN]

    again = inst.run("--uninstall").ok()
    assert "nothing to uninstall" in again.stdout, again.describe()


@contextmanager
def administrators_bird_unit(inst: Installation):
    """Uninstalled, with the directory of bird.service made: yields its path for the test to put
    the administrator's own file there; afterwards removes it and the directories left empty."""
    if inst.installed:
        inst.run("--uninstall").ok()
        inst.installed = False
    unit = inst.unit_dir / "bird.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield unit
    finally:
        unit.unlink(missing_ok=True)
        for directory in (unit.parent, unit.parent.parent, unit.parent.parent.parent):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


def test_mask_made_by_someone_else_is_kept(installation):
    """bird.service already masked before the installer ran (by the administrator): the installer
    does not record it as its own, and --uninstall leaves it masked."""
    inst = installation
    with administrators_bird_unit(inst) as mask:
        mask.symlink_to("/dev/null")
        out = inst.ensure_installed().stdout
        assert "masked Debian's bird.service" not in out, out
        assert not any(line.startswith("mask:") for line in inst.manifest.read_text().splitlines())
        removed = inst.run("--uninstall").ok()
        inst.installed = False
        assert os.readlink(mask) == "/dev/null", removed.describe()
        assert "unmasked" not in removed.stdout, removed.describe()


def test_a_bird_service_unit_of_the_administrators_is_left_alone(installation):
    """A bird.service unit file of the administrator's own where the mask would go: the installer
    neither replaces nor records it, warns that Debian's BIRD would delete calico-node's routes if
    it runs, and --uninstall leaves it."""
    inst = installation
    with administrators_bird_unit(inst) as unit:
        unit.write_text("[Service]\nExecStart=/usr/sbin/bird -f\n")
        out = inst.ensure_installed().stdout
        assert f"warning: {unit} exists and is not a mask; Debian's bird.service is left alone" in out, out
        assert not any(line.startswith("mask:") for line in inst.manifest.read_text().splitlines())
        removed = inst.run("--uninstall").ok()
        inst.installed = False
        assert unit.read_text() == "[Service]\nExecStart=/usr/sbin/bird -f\n" and "unmasked" not in removed.stdout, removed.describe()


def test_paths_with_spaces_and_values_with_quotes(installation, tmp_path):
    """Every directory but the prefix holds a space, and calico-node's settings hold quotes, a
    backslash and a dollar: the plugins run, the unit quotes its command, the environment file
    reads back as given, the check command the installer prints runs (and finds no calico-node on
    the run directory with a space), and --uninstall finds calico-node's run directory through the
    unit's environment file and removes everything. (The prefix cannot hold one: the kernel splits
    a #! line at white space, so it is refused.)"""
    root = tmp_path / "with space"
    prefix = tmp_path / "opt"
    dirs = {name: root / f"{name} dir" for name in ("bin", "conf", "ctl", "units", "run", "state", "etc")}
    env_file = dirs["etc"] / "node settings.env"
    selector = "rack == 'a' && has(zone)"
    password = "it's a \\back$lash \"secret\""
    argv = ["bash", str(INSTALLER), "--prefix", str(prefix), "--bin-dir", str(dirs["bin"]), "--conf-dir", str(dirs["conf"]),
            "--calicoctl-dir", str(dirs["ctl"]), "--unit-dir", str(dirs["units"]), "--run-dir", str(dirs["run"]),
            "--state-dir", str(dirs["state"]), "--node-env-file", str(env_file), "--etcd-endpoints", ETCD_ENDPOINT,
            "--nodename", "spaced-node", "--log-file", str(root / "log dir" / "cni.log")]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           **offline_pip_env(installation.wheelhouse), "CALICO_IPV4POOL_NODE_SELECTOR": selector, "ETCD_USERNAME": "calico", "ETCD_PASSWORD": password}
    out = run_in(None, argv, env=env, timeout=600).ok().stdout
    try:
        version = run_in(None, [str(dirs["bin"] / "calico")], env={"CNI_COMMAND": "VERSION", "CALICO_CNI_AGENT_SOCKET": ""})
        assert "1.0.0" in version.ok().json()["supportedVersions"]
        unit = (dirs["units"] / "calico-node.service").read_text().splitlines()
        assert f'ExecStart="{dirs["ctl"]}/calico-node"' in unit and f"EnvironmentFile={env_file}" in unit
        read_back = run_in(None, ["sh", "-ac", f'. "{env_file}"; printf "%s\\n" "$CALICO_IPV4POOL_NODE_SELECTOR" "$ETCD_PASSWORD" "$CALICO_RUN_DIR"'], env={})
        assert read_back.ok().stdout.splitlines() == [selector, password, str(dirs["run"])]
        (check,) = [line for line in out.splitlines() if "and check it with:" in line]
        command = check.split("and check it with:", 1)[1].split("  (and -bird-ready)")[0].strip()
        probe = run_in(None, ["bash", "-c", command], env={"PATH": env["PATH"]})
        assert probe.rc == 1 and f"nothing answers on {dirs['run']}/cni.sock" in probe.stderr, probe.describe()

        # A BIRD socket left in the run directory: --uninstall (no systemd here) says how to stop it.
        dirs["run"].mkdir(parents=True)
        bird = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bird.bind(str(dirs["run"] / "bird.ctl"))
    finally:
        removed = run_in(None, ["bash", str(INSTALLER), "--prefix", str(prefix), "--uninstall"], env=env)
    bird.close()
    assert f"note: a BIRD may still answer on {dirs['run']}/bird.ctl" in removed.ok().stdout, removed.describe()
    (dirs["run"] / "bird.ctl").unlink()
    dirs["run"].rmdir()
    # Kept only because the run directory was still in it when --uninstall ran.
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["with space"], removed.describe()


def run_installer(*args: str, env: dict[str, str] | None = None) -> ClientRun:
    """The installer with only PATH and HOME (and `env`) in its environment."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": os.environ.get("HOME", "/root"), **(env or {})}
    return harness.run_in(None, ["bash", str(INSTALLER), *args], env=full_env, timeout=120)


@pytest.mark.parametrize(
    "args, env, rc, message",
    [
        (["--bogus"], {}, 2, "unknown option --bogus"),
        (["--agent-socket", "run/cni.sock"], {}, 1, "--agent-socket must be an absolute path, got run/cni.sock"),
        ([], {"CALICO_CNI_AGENT": "yes"}, 1, "CALICO_NODE (or CALICO_CNI_AGENT) must be true or false, got yes"),
        (["--agent-socket", "/run/agent.sock"], {}, 1, "calico-node serves <run dir>/cni.sock, so the socket must be named cni.sock"),
        (["--run-dir", "run"], {}, 1, "--run-dir must be an absolute path, got run"),
        (["--state-dir", "state"], {}, 1, "--state-dir must be an absolute path, got state"),
        (["--calicoctl-dir", "bin"], {}, 1, "--calicoctl-dir must be an absolute path, got bin"),
        (["--prefix", "/nonexistent/with space/opt"], {}, 1, "--prefix must not hold white space (the installed commands start with #!/nonexistent/with space/opt/bin/python)"),
        (["--backend", "gobgp"], {}, 1, "--backend must be bird, vxlan or none, got gobgp"),
        ([], {"ETCD_PASSWORD": "line\nbreak", "ETCD_USERNAME": "calico"}, 1, "ETCD_PASSWORD cannot be written to"),
        (["--python", "/bin/false"], {}, 1, "/bin/false is not Python 3.11 or newer"),
        (["--mtu", "big"], {}, 1, "--mtu must be a whole number of bytes (e.g. 1440), got big"),
        (["--mtu", "1500x"], {}, 1, "--mtu must be a whole number of bytes (e.g. 1440), got 1500x"),
        # calico-node's own settings rules, applied before anything is written.
        (["--as", "AS64512"], {}, 1, "calico-node would refuse its settings: AS='AS64512' is not a valid AS number: use 1 to 4294967295"),
        (["--as", "64512x"], {}, 1, "AS='64512x' is not a valid AS number"),
        (["--ip", "198.19.1.300"], {}, 1, "IP='198.19.1.300' is not an IPv4 address"),
        (["--ip-autodetection-method", "first"], {}, 1, "invalid IP autodetection method IP_AUTODETECTION_METHOD='first'"),
        (["--router-id", "fd00::1"], {}, 1, "CALICO_ROUTER_ID='fd00::1' is not a router id"),
        (["--nodename", "node_"], {}, 1, "the node name from NODENAME 'node_' is not a valid node name"),
        ([], {"CALICO_IPV4POOL_IPIP": "on"}, 1, "CALICO_IPV4POOL_IPIP='on' is not an encapsulation mode"),
        ([], {"NO_DEFAULT_POOLS": "yes"}, 1, "NO_DEFAULT_POOLS='yes' is ambiguous"),
        ([], {"ETCD_TIMEOUT": "soon"}, 1, "ETCD_TIMEOUT='soon' is not a number of seconds"),
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
