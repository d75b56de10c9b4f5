"""BIRD is started with -R (graceful-restart recovery) only when the kernel holds routes an
earlier BIRD left: recovery keeps them until every peer is back, or 240 s, and programs nothing
new meanwhile, which on a first start would only delay a new node's routes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from calico_cni.dataplane import rtnl
from calico_cni.dataplane.bird import Bird, kernel_has_bird_routes
from tests import netns


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_minus_r_only_when_the_kernel_holds_routes_of_an_earlier_bird(tmp_path):
    ns = netns.add(f"{netns.PREFIX}birdr-{os.getpid()}")
    config = tmp_path / "bird.cfg"
    config.write_text("router id 198.19.0.77;\nprotocol device { }\nprotocol kernel { ipv4 { export none; }; learn; persist; }\n")
    bird = Bird(str(config), str(tmp_path / "bird.ctl"), str(tmp_path / "bird.pid"))
    previous = netns.enter(ns)
    try:
        assert bird.start() is True
        first = bird.pid()
        assert first is not None and "-R" not in _cmdline(first), _cmdline(first)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while bird.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        netns.ip("-n", ns, "route", "add", "blackhole", "198.18.99.0/26", "proto", "bird")
        assert bird.start() is True
        second = bird.pid()
        assert second is not None and "-R" in _cmdline(second), _cmdline(second)
    finally:
        netns.leave(previous)
        pid = bird.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        netns.delete(ns)


def test_a_kernel_that_cannot_be_read_means_recovery(monkeypatch):
    """Recovering needlessly costs time, not routes: an unreadable kernel counts as holding some."""

    def refuse():
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(rtnl.Rtnl, "open", refuse)
    assert kernel_has_bird_routes() is True


def test_the_probes_and_node_status_do_not_import_netlink():
    """Only starting BIRD reads the kernel: the probes (every few seconds) and `calicoctl node
    status` import the BIRD module without the netlink code."""
    code = "import sys, calico_cni.node.probes, calico_cni.ctl.node_status; print('calico_cni.dataplane.rtnl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
