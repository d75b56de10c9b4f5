"""Run a `calico-cni-agent` in the benchmark's node namespace for the "ours + agent" plugin set."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from typing import Iterator

from tests.integration.harness import Node


def _healthy(binary: str, sock: str) -> bool:
    return subprocess.run([binary, "health", "--socket", sock], capture_output=True, timeout=30).returncode == 0


@contextlib.contextmanager
def agent_in(node: Node, venv_bin: str, sock: str, log: str) -> Iterator[subprocess.Popen]:
    """An agent serving `sock` inside `node`; stopped (SIGTERM, then SIGKILL) on exit."""
    binary = os.path.join(venv_bin, "calico-cni-agent")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.Popen(["nsenter", f"--net={node.path}", binary, "--socket", sock, "--log-file", log, "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(sock) and _healthy(binary, sock)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"calico-cni-agent did not start (rc={proc.poll()}); see {log}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
