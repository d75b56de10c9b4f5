"""Real etcd servers for the security tests: TLS with client-certificate authentication, user/password
authentication with short-lived simple tokens, and a three-member cluster on loopback.

Every server is started with a temporary data directory under /dev/shm and must be stopped by the
caller (`stop()`, also on failure); `stop()` removes the data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from tests.etcd_server import ETCD
from tests.processes import stop_process

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Member:
    """One etcd process."""

    name: str
    client_url: str
    peer_url: str
    args: list[str]
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart) the process with its data directory."""
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([ETCD, *self.args], stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """Stop the process (its data stays until `remove`)."""
        if self.proc is not None:
            stop_process(self.proc)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


@dataclass
class Cluster:
    """One or more etcd members and how etcdctl reaches them."""

    members: list[Member]
    ctl_args: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoint(self) -> str:
        return self.members[0].client_url

    def etcdctl(self, *args: str, endpoints: list[str] | None = None, check: bool = True,
                user: str | None = None) -> subprocess.CompletedProcess:
        """Run etcdctl (v3 API) against the cluster."""
        cmd = [ETCDCTL, "--endpoints=" + ",".join(endpoints or self.endpoints), "--command-timeout=5s", *self.ctl_args]
        if user:
            cmd.append(f"--user={user}")
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        if check and proc.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def wait_healthy(self, members: list[Member] | None = None, timeout: float = 15) -> None:
        """Wait until every given member (default: all) answers a health check."""
        members = members or self.members
        deadline = time.monotonic() + timeout
        while True:
            exited = [m for m in members if m.proc is not None and m.proc.poll() is not None]
            if exited:
                raise RuntimeError(f"etcd {exited[0].name} exited: {exited[0].log_tail()}")
            ok = self.etcdctl("endpoint", "health", endpoints=[m.client_url for m in members], check=False)
            if ok.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy: {ok.stderr.strip()}\n{members[0].log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop every member and remove its data."""
        for m in self.members:
            m.remove()


def _data_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix="calico-test-etcd-", dir=base)


def _member(name: str, client_url: str, peer_url: str, cluster: str, extra: list[str], log_dir: str) -> Member:
    data_dir = _data_dir()
    args = [
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        # One token per cluster (every member must agree), distinct from other test runs' clusters.
        "--initial-cluster-token", f"calico-test-{os.getpid()}-{cluster}",
        "--log-level", "warn",
        "--logger", "zap",
        *extra,
    ]
    return Member(name, client_url, peer_url, args, data_dir, os.path.join(log_dir, f"{name}.log"))


def start_single(host: str, port: int, peer_port: int, log_dir: str, *, tls: dict[str, str] | None = None,
                 extra: list[str] | None = None, ctl_args: list[str] | None = None) -> Cluster:
    """One etcd member; with `tls` ({"ca", "cert", "key"}) it serves https and requires client certificates."""
    scheme = "https" if tls else "http"
    client = f"{scheme}://{host}:{port}"
    peer = f"http://{host}:{peer_port}"
    args = list(extra or [])
    if tls:
        args += ["--cert-file", tls["cert"], "--key-file", tls["key"], "--trusted-ca-file", tls["ca"], "--client-cert-auth"]
    member = _member("single", client, peer, f"single={peer}", args, log_dir)
    cluster = Cluster([member], list(ctl_args or []))
    try:
        member.start()
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_cluster(host: str, base_port: int, log_dir: str, size: int = 3) -> Cluster:
    """A `size`-member cluster on host, client ports base_port, base_port+2, ..., peers one above each."""
    names = [f"m{i}" for i in range(size)]
    clients = [f"http://{host}:{base_port + 2 * i}" for i in range(size)]
    peers = [f"http://{host}:{base_port + 2 * i + 1}" for i in range(size)]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers))
    members = [_member(n, c, p, initial, [], log_dir) for n, c, p in zip(names, clients, peers)]
    cluster = Cluster(members)
    try:
        for m in members:
            m.start()
        cluster.wait_healthy(timeout=30)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def enable_auth(cluster: Cluster, root_password: str, user: str, password: str, prefix: str = "/calico/") -> None:
    """Create root and `user` (with a role granting readwrite on `prefix`) and turn authentication on."""
    cluster.etcdctl("user", "add", f"root:{root_password}")
    cluster.etcdctl("role", "add", "calico")
    cluster.etcdctl("role", "grant-permission", "calico", "--prefix=true", "readwrite", prefix)
    cluster.etcdctl("user", "add", f"{user}:{password}")
    cluster.etcdctl("user", "grant-role", user, "calico")
    cluster.etcdctl("auth", "enable")
