"""Start and stop a `calico-cni-agent` inside a test node namespace, on a socket under tmp; or run
an agent server on a thread of the test process (`bare_server`, no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.calico_support import Node
from tests.conftest import plugin_env, plugin_path
from tests.crash_launcher import KILL, crashing
from tests.processes import stop_process


@dataclass
class Agent:
    """A running agent: its process, socket and log."""

    proc: subprocess.Popen
    socket: str
    log: Path
    binary: str = ""  # the calico-cni-agent that answers health checks (default: the venv's)

    def env(self) -> dict[str, str]:
        """Extra plugin environment that sends requests to this agent."""
        return {"CALICO_CNI_AGENT_SOCKET": self.socket}

    def health(self) -> subprocess.CompletedProcess:
        binary = self.binary or plugin_path("calico-cni-agent")
        return subprocess.run([binary, "health", "--socket", self.socket], capture_output=True, text=True, timeout=30)

    def served(self) -> int:
        """Requests served so far (from the health answer)."""
        answer = self.health()
        assert answer.returncode == 0, answer.stderr
        return json.loads(answer.stdout)["served"]

    def stop(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL); safe to call twice."""
        stop_process(self.proc, 15, 15)


def start_agent(node: Node, directory: Path, **env: str) -> Agent:
    """An agent in `node`'s namespace on `directory`/agent/cni.sock, answering health checks.
    With `CALICO_CNI_TEST_KILL_AT_WRITE=N` in `env` it is started through the test-only crash
    launcher, which SIGKILLs it just before its Nth etcd write."""
    sock = str(directory / "agent" / "cni.sock")
    log = directory / "agent.log"
    full_env = {k: v for k, v in plugin_env().items() if k != "CALICO_CNI_AGENT_SOCKET"}
    full_env.update(env)
    program = crashing("calico-cni-agent") if KILL in env else plugin_path("calico-cni-agent")
    argv = ["nsenter", f"--net={node.path}", program, "--socket", sock, "--log-file", str(log), "--log-level", "debug"]
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    agent = Agent(proc, sock, log)
    try:
        wait_healthy(agent)
        return agent
    except BaseException:
        agent.stop()
        raise


def wait_healthy(agent: Agent, timeout: float = 30) -> None:
    """Wait until the agent answers its health check; AssertionError if it exits or never does."""
    deadline = time.monotonic() + timeout
    while agent.proc.poll() is None and time.monotonic() < deadline:
        if os.path.exists(agent.socket) and agent.health().returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"agent did not start (rc={agent.proc.poll()})")


@pytest.fixture
def agents(tmp_path):
    """A factory of agents in node namespaces; every agent is stopped afterwards."""
    started: list[Agent] = []

    def factory(node: Node, **env: str) -> Agent:
        started.append(start_agent(node, tmp_path / f"a{len(started)}", **env))
        return started[-1]

    try:
        yield factory
    finally:
        for agent in started:
            agent.stop()
            if agent.proc.stderr is not None:
                agent.proc.stderr.close()


@pytest.fixture
def bare_server(tmp_path):
    """An agent server on a thread of this process, serving no plugin: (socket path, server)."""
    import threading

    from calico_cni.agent.daemon import listen
    from calico_cni.agent.server import Server

    path = str(tmp_path / "agent" / "cni.sock")
    listener = listen(path)
    server = Server(listener, {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, server
    finally:
        server.stop(5)
        thread.join(5)
        listener.close()
