"""Stopping the processes tests start (etcd, agents, servers)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 10, kill_timeout: float | None = None) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL and wait (up to `kill_timeout` s, None: for ever);
    a process that already exited is left alone, so calling it twice is safe."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(kill_timeout)
