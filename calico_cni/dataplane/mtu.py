"""Which MTU a workload's veth pair gets, decided before any interface exists so a bad MTU setting
fails the ADD with nothing to roll back (the order is in docs/calico-plugin.md, "MTU")."""

from __future__ import annotations

import logging

from calico_cni.dataplane.errors import MtuError
from calico_cni.dataplane.rtnl import Rtnl

log = logging.getLogger(__name__)

MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_MTU = 1500
MIN_MTU, MAX_MTU = 68, 65535


def _valid(value: int, origin: str) -> int:
    if not MIN_MTU <= value <= MAX_MTU:
        raise MtuError(f"{origin}: MTU {value} is out of range", f"an MTU is {MIN_MTU} to {MAX_MTU}")
    return value


def from_file(path: str) -> int | None:
    """The MTU written in `path`, or None when the file does not exist."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MtuError(f"cannot read the MTU from {path}", exc.strerror or str(exc)) from None
    if not text.isdigit():
        raise MtuError(f"{path} does not hold an MTU", f"found {text[:40]!r}; write a number or remove the file")
    return _valid(int(text), path)


def of_default_route(host: Rtnl) -> tuple[int, str] | None:
    """(MTU, device name) of the device carrying the node's default route (IPv4 first, then IPv6)."""
    for version in (4, 6):
        defaults = [r for r in host.routes(version) if r.dst.prefixlen == 0 and r.oif]
        for route in sorted(defaults, key=lambda r: r.priority):
            link = host.link(index=route.oif)
            if link is not None and link.mtu:
                return link.mtu, link.name
    return None


def decide(configured: int | None, host: Rtnl, mtu_file: str = MTU_FILE) -> tuple[int, str]:
    """(MTU, where it came from): the `mtu` key, else `mtu_file`, else the default route's device, else 1500.

    The `mtu` key wins even over a smaller MTU file (calico-node writes the MTU its encapsulation
    leaves room for); that case is logged as a warning, since such pods see drops or fragmentation
    across nodes."""
    if configured is not None:
        value = _valid(configured, "mtu")
        try:
            written = from_file(mtu_file)
        except MtuError:
            written = None
        if written is not None and value > written:
            log.warning("the network configuration's mtu %d is above %d, the MTU calico-node wrote to %s for the encapsulation in use; "
                        "packets between nodes may be dropped or fragmented (lower mtu, or remove it to use the file)", value, written, mtu_file)
        return value, "the mtu key"
    value = from_file(mtu_file)
    if value is not None:
        return value, mtu_file
    found = of_default_route(host)
    if found is not None:
        return found[0], f"device {found[1]} (default route)"
    return DEFAULT_MTU, "the default"
