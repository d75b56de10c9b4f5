"""Network-namespace helpers for tests: create, enter and remove namespaces without touching the
machine's own namespace."""

from __future__ import annotations

import ctypes
import os
import subprocess
from contextlib import contextmanager
from typing import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
PREFIX = "calico-test-"

_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip` with arguments; raises with its stderr when it fails and check is set."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def setns_fd(fd: int) -> None:
    """Move the calling thread into the network namespace of `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter(name: str) -> int:
    """Enter a named namespace; returns a descriptor of the namespace we left (for `leave`)."""
    previous = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
    try:
        setns_fd(fd)
    finally:
        os.close(fd)
    return previous


def leave(previous: int) -> None:
    """Return to the namespace saved by `enter`."""
    try:
        setns_fd(previous)
    finally:
        os.close(previous)


@contextmanager
def inside(name: str) -> Iterator[str]:
    """The calling thread in namespace `name` for the block, back where it was afterwards."""
    previous = enter(name)
    try:
        yield name
    finally:
        leave(previous)


def add(name: str) -> str:
    """Create a namespace with loopback up."""
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    return name


def delete(name: str) -> None:
    """Remove a namespace (and with it every interface inside); missing is fine."""
    ip("netns", "del", name, check=False)


def sweep_stale() -> None:
    """Remove test namespaces left by test runs that were killed (their pid is gone)."""
    if not os.path.isdir(NETNS_DIR):
        return
    for name in os.listdir(NETNS_DIR):
        if not name.startswith(PREFIX):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            delete(name)
