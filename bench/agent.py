"""Run a `calico-cni-agent` in the benchmark's node namespace for the "ours + agent" plugin set."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from tests.agent_support import Agent, wait_healthy
from tests.clients.harness import Node


@contextlib.contextmanager
def agent_in(node: Node, venv_bin: str, sock: str, log: str) -> Iterator[subprocess.Popen]:
    """An agent serving `sock` inside `node`; stopped (SIGTERM, then SIGKILL) on exit."""
    binary = os.path.join(venv_bin, "calico-cni-agent")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.Popen(["nsenter", f"--net={node.path}", binary, "--socket", sock, "--log-file", log, "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
    agent = Agent(proc, sock, Path(log), binary=binary)
    try:
        wait_healthy(agent)
        yield proc
    finally:
        agent.stop()
