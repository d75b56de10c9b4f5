"""Kernel settings under /proc/sys/net, in the calling thread's network namespace.

Keys are slash paths below /proc/sys (`net/ipv4/conf/cali0123/proxy_arp`), never dotted names:
interface names may contain dots. Call these through `Netns.run` for another namespace.
"""

from __future__ import annotations

import os

from calico_cni.timing import timed

from calico_cni.dataplane.errors import DataplaneError

ROOT = "/proc/sys/"


@timed("sysctl")
def write(key: str, value: str | int) -> None:
    """Set one sysctl; raises a dataplane error naming it."""
    try:
        fd = os.open(ROOT + key, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise DataplaneError(f"cannot set {key.replace('/', '.')} to {value}", exc.strerror or str(exc)) from None


@timed("sysctl")
def read(key: str) -> str | None:
    """One sysctl's value, or None when it does not exist."""
    try:
        with open(ROOT + key, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write_all(settings: list[tuple[str, str | int]]) -> None:
    """Set several sysctls in order."""
    for key, value in settings:
        write(key, value)
