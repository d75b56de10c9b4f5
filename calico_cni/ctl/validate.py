"""The rules pools, node labels and IPAM settings must satisfy. Pure functions: each raises
`CtlError` with a message that says what is wrong and what would be accepted."""

from __future__ import annotations

import ipaddress
import re
from typing import Sequence

from calico_cni.model.records import AUTOMATIC, BLOCK_SIZE_RANGE, DEFAULT_BLOCK_SIZE, MANUAL, TUNNEL, WORKLOAD, IPNetwork
from calico_cni.model.selector import SelectorError, parse

from calico_cni.ctl.errors import CtlError

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

# Ranges no pool may overlap: routing to and from pods depends on them (169.254.1.1 is the pods'
# gateway), or they are not unicast.
RESERVED = {
    4: [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")],
    6: [ipaddress.ip_network(n) for n in ("::/128", "::1/128", "::ffff:0:0/96", "fe80::/10", "ff00::/8")],
}
USES = {u.lower(): u for u in (WORKLOAD, TUNNEL)}
MODES = {m.lower(): m for m in (AUTOMATIC, MANUAL)}


def resource_name(name: str, what: str = "pool") -> str:
    """A Calico resource name: lower-case letters, digits, '-' and '.', at most 253 characters."""
    if not name or len(name) > 253 or not _DNS_NAME.match(name):
        raise CtlError(
            f"invalid {what} name {name!r}: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (at most 253 characters)"
        )
    return name


def pool_cidr(text: str) -> IPNetwork:
    """A pool CIDR: a network address with an explicit prefix length, outside reserved ranges."""
    if "/" not in text:
        raise CtlError(f"invalid CIDR {text!r}: give a prefix length, e.g. 198.18.0.0/24 or fd00:198:18::/64")
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise CtlError(f"invalid CIDR {text!r}: not an IPv4 or IPv6 network") from None
        raise CtlError(f"invalid CIDR {text!r}: host bits are set; the network is {loose}") from None
    for reserved in RESERVED[net.version]:
        if net.overlaps(reserved):
            raise CtlError(f"CIDR {net} overlaps the reserved IPv{net.version} range {reserved}; pools must be unicast addresses outside it")
    return net


def block_size(net: IPNetwork, size: int | None) -> int:
    """The pool's block size: the family's default when not given; within the family's range and
    no shorter than the pool's own prefix."""
    low, high = BLOCK_SIZE_RANGE[net.version]
    if size is None:
        size = DEFAULT_BLOCK_SIZE[net.version]
        if size < net.prefixlen:
            raise CtlError(f"pool {net} is smaller than the default IPv{net.version} block size /{size}; give --block-size between {net.prefixlen} and {high}")
    if not low <= size <= high:
        raise CtlError(f"block size {size} is outside the IPv{net.version} range {low} to {high}")
    if size < net.prefixlen:
        raise CtlError(f"block size {size} is larger than the pool {net}: use a block size of at least {net.prefixlen}")
    return size


def node_selector(text: str) -> str:
    """A selector that parses in Calico's selector language (`calico_cni.model.selector`): a pool
    whose selector does not parse is skipped by every node's allocation."""
    try:
        parse(text)
    except SelectorError as exc:
        raise CtlError(f"invalid node selector: {exc}") from None
    return text


def allowed_uses(values: Sequence[str]) -> tuple[str, ...]:
    """Workload and/or Tunnel (comma-separated or repeated), case-insensitive."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item.lower() not in USES:
                raise CtlError(f"invalid allowed use {item!r}: expected Workload or Tunnel")
            if USES[item.lower()] not in out:
                out.append(USES[item.lower()])
    if not out:
        raise CtlError("allowed uses must name Workload, Tunnel or both")
    return tuple(out)


def assignment_mode(value: str) -> str:
    """Automatic or Manual, case-insensitive, spelled as the pool record stores it."""
    if value.lower() not in MODES:
        raise CtlError(f"invalid assignment mode {value!r}: expected Automatic or Manual")
    return MODES[value.lower()]


def label_key(key: str) -> str:
    """A Kubernetes-style label key: [prefix/]name, name at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if (slash and (len(prefix) > 253 or not _DNS_NAME.match(prefix))) or not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise CtlError(
            f"invalid label key {key!r}: expected [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return key


def label_value(key: str, value: str) -> str:
    """A Kubernetes-style label value: empty, or at most 63 letters, digits, '-', '_' or '.'."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise CtlError(
            f"invalid value {value!r} for label {key}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def label_changes(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """`k=v` arguments (set) and `k-` arguments (remove)."""
    if not args:
        raise CtlError("give at least one label: key=value to set it, key- to remove it")
    sets: dict[str, str] = {}
    removes: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            sets[label_key(key)] = label_value(key, value)
        elif arg.endswith("-"):
            removes.append(label_key(arg[:-1]))
        else:
            raise CtlError(f"invalid label argument {arg!r}: use key=value to set a label or key- to remove it")
    both = sorted(set(sets) & set(removes))
    if both:
        raise CtlError(f"label {both[0]} is both set and removed")
    return sets, removes


def ipam_settings(strict_affinity: bool, auto_allocate_blocks: bool, max_blocks_per_host: int) -> None:
    """Strict affinity and auto-allocation may not both be off, as Calico's IPAM configuration
    requires; a per-host block limit needs strict affinity, since borrowing addresses from other
    nodes' blocks would get around the limit."""
    if not strict_affinity and not auto_allocate_blocks:
        raise CtlError(
            "strict affinity and auto-allocate-blocks may not both be off: set --strictaffinity=true or --auto-allocate-blocks=true"
        )
    if max_blocks_per_host > 0 and not strict_affinity:
        raise CtlError(
            f"max-blocks-per-host {max_blocks_per_host} needs strict affinity: set --strictaffinity=true, or --max-blocks-per-host=0 for no limit"
        )
