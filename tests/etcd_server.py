"""A real etcd (Debian's etcd-server) for tests, with a temporary data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from tests.processes import stop_process

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class EtcdServer:
    """A running etcd: its client endpoint and process."""

    host: str
    port: int
    proc: subprocess.Popen
    data_dir: str
    log_path: str
    peer_port: int = 2380

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop etcd and remove its data."""
        stop_process(self.proc)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, down: float = 0.0) -> None:
        """Stop etcd, keep it down `down` seconds, and start it again on the same data."""
        stop_process(self.proc)
        time.sleep(down)
        again = start(self.host, self.port, self.peer_port, os.path.dirname(self.log_path), data_dir=self.data_dir)
        self.proc = again.proc


def start(host: str, port: int = 2379, peer_port: int = 2380, log_dir: str | None = None, data_dir: str | None = None) -> EtcdServer:
    """Start etcd listening on host:port and wait until it answers (10 s at most); on `data_dir`
    when given (a restart), else on a new temporary one."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    data_dir = data_dir or tempfile.mkdtemp(prefix="calico-test-etcd-", dir=base)
    log_path = os.path.join(log_dir or data_dir, "etcd.log")
    client = f"http://{host}:{port}"
    peer = f"http://{host}:{peer_port}"
    log = open(log_path, "a")
    proc = subprocess.Popen(
        [
            ETCD,
            "--name", "test",
            "--data-dir", data_dir,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--log-level", "warn",
            "--logger", "zap",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = EtcdServer(host, port, proc, data_dir, log_path, peer_port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        ok = subprocess.run(
            ["etcdctl", f"--endpoints={client}", "--command-timeout=1s", "endpoint", "health"],
            capture_output=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        if ok.returncode == 0:
            return server
        time.sleep(0.1)
    server.stop()
    with open(log_path) as f:
        raise RuntimeError(f"etcd did not start: {f.read()[-2000:]}")
