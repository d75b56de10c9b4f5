"""The node's address, detected as Calico v3.30's calico/node detects it (IP_AUTODETECTION_METHOD).

Everything here reads the network namespace of the calling thread, through `dataplane.rtnl` (links
and addresses) and, for `can-reach=`, a UDP socket. Calico's rules, kept exactly:

- Interfaces are taken in the reverse of the kernel's order (Calico's GetInterfaces walks Go's
  interface list, which is in index order, backwards), so `first-found` takes the first global
  unicast address of the most recently created interface that no exclusion matches. Addresses of
  one interface keep the kernel's order.
- `first-found` and `skip-interface=` exclude Calico's list of internal interfaces
  (`DEFAULT_INTERFACES_TO_EXCLUDE`); `interface=` and `cidr=` exclude nothing (an address on `lo`
  or `docker0` can be chosen with them).
- "Global unicast" is Go's: not unspecified, loopback, multicast, link-local or 255.255.255.255
  (private addresses and ULAs are global unicast).
- The result keeps the interface's prefix length and the host bits: 198.19.1.2/24.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Sequence

from calico_cni.dataplane.rtnl import IPInterface, Rtnl
from calico_cni.errors import CalicoError
from calico_cni.node.settings import Method, parse_method

log = logging.getLogger(__name__)

# Calico v3.30's autodetection_linux.go: interfaces first-found and skip-interface= never use.
DEFAULT_INTERFACES_TO_EXCLUDE = (
    r"^docker.*", r"^cbr.*", r"^dummy.*", r"^podman.*",
    r"^virbr.*", r"^lxcbr.*", r"^veth.*", r"^lo", r"^br-.*",
    r"^cali.*", r"^tunl.*", r"^flannel.*", r"^kube-ipvs.*", r"^cni.*",
    r"^vxlan\.calico.*", r"^vxlan-v6\.calico.*", r"^wireguard\.cali.*", r"^wg-v6\.cali.*",
    r"^nodelocaldns.*",
)  # fmt: skip
_BROADCAST = IPv4Address("255.255.255.255")


class AutodetectError(CalicoError):
    """The node's address cannot be detected with this method here (not: nothing matched)."""


@dataclass(frozen=True)
class Interface:
    """One interface and its addresses of one IP version (with their prefix lengths)."""

    name: str
    index: int
    addresses: tuple[IPInterface, ...]


def is_global_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's net.IP.IsGlobalUnicast."""
    return not (address == _BROADCAST or address.is_unspecified or address.is_loopback or address.is_multicast or address.is_link_local)


def _matches(patterns: Sequence[str], name: str) -> bool:
    return any(re.search(p, name) for p in patterns)


def interfaces(version: int, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Interface]:
    """The interfaces of this namespace, in Calico's order (the kernel's, reversed), with their
    addresses of `version`: only those matching one of `include` (when given) and none of
    `exclude` (regexes searched in the name, as Go's MatchString)."""
    try:
        with Rtnl.open() as rtnl:
            links = rtnl.links()
            addresses = rtnl.addresses(version=version)
    except OSError as exc:
        raise AutodetectError("cannot list this node's interfaces and addresses", str(exc)) from None
    out = []
    for link in sorted(links, key=lambda link: link.index, reverse=True):
        if include and not _matches(include, link.name):
            continue
        if exclude and _matches(exclude, link.name):
            continue
        mine = tuple(a.address for a in addresses if a.index == link.index and a.address.version == version)
        out.append(Interface(link.name, link.index, mine))
    return out


def _first(found: Sequence[Interface], version: int, cidrs: Sequence[str] = ()) -> tuple[IPInterface | None, str]:
    """Calico's FilteredEnumeration over `found`: the first global unicast address (inside one of
    `cidrs`, when given) and the interface's name, or None and why not."""
    if not found:
        return None, "no valid host interfaces found"
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    for iface in found:
        for address in iface.addresses:
            if is_global_unicast(address.ip) and (not nets or any(address.ip in n for n in nets if n.version == version)):
                log.info("using autodetected IPv%d address %s on interface %s", version, address, iface.name)
                return address, ""
    seen = ", ".join(i.name for i in found)
    return None, f"no valid IPv{version} addresses found on the host interfaces (looked at {seen})"


def _find(address: ipaddress.IPv4Address | ipaddress.IPv6Address, version: int) -> IPInterface | None:
    """The interface address equal to `address`, with its prefix length (every interface)."""
    for iface in interfaces(version):
        for candidate in iface.addresses:
            if candidate.ip == address:
                return candidate
    return None


def _reach(destination: str, version: int) -> tuple[IPInterface | None, str]:
    """Calico's can-reach: the source address the kernel picks for a UDP "connection" to
    [destination]:80 (nothing is sent), found on an interface to get its prefix."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    host = destination.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        target = socket.getaddrinfo(host, 80, family, socket.SOCK_DGRAM)[0][4]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            local = sock.getsockname()[0]
    except OSError as exc:
        return None, f"connecting to {destination}: {exc.strerror or exc}"
    ip = ipaddress.ip_address(local.split("%", 1)[0])
    found = _find(ip, version)
    if found is None:
        return None, f"autodetected IPv{version} address does not match any addresses found on local interfaces: {ip}"
    log.info("using autodetected IPv%d address %s, detected by connecting to %s", version, found, destination)
    return found, ""


def detect_with_reason(method: str | Method, version: int) -> tuple[IPInterface | None, str]:
    """The address `method` finds for IP `version` (with its interface's prefix), or None and a
    sentence saying why none was found. `AutodetectError` when the method cannot work here
    (kubernetes-internal-ip, or the interfaces cannot be read); `SettingsError` for a method
    that does not parse."""
    parsed = parse_method(method) if isinstance(method, str) else method
    if parsed.kind == "first-found":
        return _first(interfaces(version, exclude=DEFAULT_INTERFACES_TO_EXCLUDE), version)
    if parsed.kind == "interface":
        return _first(interfaces(version, include=parsed.values), version)
    if parsed.kind == "skip-interface":
        return _first(interfaces(version, exclude=(*DEFAULT_INTERFACES_TO_EXCLUDE, *parsed.values)), version)
    if parsed.kind == "cidr":
        return _first(interfaces(version), version, parsed.values)
    if parsed.kind == "can-reach":
        return _reach(parsed.values[0], version)
    raise AutodetectError(
        f"autodetection method {parsed.text} needs the Kubernetes API (a Node's InternalIP), which this calico-node does not use",
        "use first-found, interface=, skip-interface=, can-reach= or cidr=, or set the address explicitly",
    )


def detect(method: str | Method, version: int) -> IPInterface | None:
    """The address `method` finds for IP `version`, or None (see `detect_with_reason`)."""
    found, reason = detect_with_reason(method, version)
    if found is None:
        log.warning("unable to autodetect an IPv%d address with %s: %s", version, method if isinstance(method, str) else method.text, reason)
    return found


def local_cidr(address: str, version: int) -> IPInterface:
    """An address as given in IP=: with a prefix, as it is (host bits kept); bare, with the prefix
    of the interface holding it (Calico's GetLocalCIDR), else as a /32 (/128)."""
    if "/" in address:
        return ipaddress.ip_interface(address)
    ip = ipaddress.ip_address(address)
    found = _find(ip, version)
    if found is None:
        log.warning("no interface holds %s: using it as a /%d", ip, ip.max_prefixlen)
        return ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}")
    log.info("including the prefix of the host interface holding %s: %s", ip, found)
    return found


def on_host(address: IPInterface) -> bool:
    """Whether an interface of this namespace holds `address` (Calico only warns when not)."""
    return _find(address.ip, address.version) is not None


def host_addresses(version: int) -> list[IPInterface]:
    """Every address of `version` on any interface (for choosing the default IPv4 pool)."""
    return [a for iface in interfaces(version) for a in iface.addresses]
