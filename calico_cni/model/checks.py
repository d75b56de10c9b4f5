"""Rules that many resource fields share, as Calico's validator states them: names, labels, IP
addresses and networks, interface names, MAC addresses, selectors. Each check takes a value and returns the
reason it is refused (a sentence naming the rule and what would be accepted), or None. Kinds use
them as a schema field's `check` (see `model.schema`). Standard library only."""

from __future__ import annotations

import ipaddress
import re

from calico_cni.model.selector import SelectorError, parse

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*\Z")
_DNS_LABEL_ONLY = re.compile(rf"^{_DNS_LABEL}\Z")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_INTERFACE = re.compile(r"^[a-zA-Z0-9_.\-]{1,15}\Z")


def dns_subdomain(name: str) -> str | None:
    """A resource name (Kubernetes' DNS subdomain): lower-case letters, digits, '-' and '.',
    starting and ending with a letter or digit, at most 253 characters."""
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return (
            f"invalid name {name!r}: use lower-case letters, digits, '-' and '.', starting and ending "
            "with a letter or digit (at most 253 characters)"
        )
    return None


def dns_label(name: str) -> str | None:
    """A namespace or tier name (a DNS label): lower-case letters, digits and '-', at most 63."""
    if not name or len(name) > 63 or not _DNS_LABEL_ONLY.match(name):
        return f"invalid name {name!r}: use lower-case letters, digits and '-', starting and ending with a letter or digit (at most 63 characters)"
    return None


def label_key(key: str) -> str | None:
    """A label key: [prefix/]name, the prefix a DNS subdomain, the name at most 63 letters, digits,
    '-', '_' or '.', starting and ending with a letter or digit."""
    prefix, slash, name = key.rpartition("/")
    if (slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"invalid label key {key!r}: expected [prefix/]name, the name at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return None


def label_value(value: str) -> str | None:
    """A label value: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending
    with a letter or digit."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"invalid label value {value!r}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    return None


def selector(text: str) -> str | None:
    """A selector in Calico's language (`model.selector`)."""
    try:
        parse(text)
    except SelectorError as exc:
        return str(exc)  # already "invalid selector '<text>': <reason>"
    return None


def ip(text: str) -> str | None:
    """An IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return f"invalid IP address {text!r}"
    return None


def cidr(text: str) -> str | None:
    """An IPv4 or IPv6 network; a bare address means a /32 or /128, as Calico reads it; host bits
    are allowed (Calico masks them)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"invalid CIDR {text!r}: expected an IPv4 or IPv6 network such as 198.18.0.0/24"
    return None


def interface_name(text: str) -> str | None:
    """A Linux interface name: at most 15 letters, digits, '_', '.' or '-'."""
    if not _INTERFACE.match(text):
        return f"invalid interface name {text!r}: at most 15 letters, digits, '_', '.' or '-'"
    return None


def interface_or_any(text: str) -> str | None:
    """An interface name as Calico's `interface` rule has it: a Linux interface name, or '*' (every
    interface of the host)."""
    return None if text == "*" else interface_name(text)


# --- Go's net.ParseIP, ParseCIDR and ParseMAC, as Calico's validator reads addresses ---


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as Go's net.ParseIP reads it (no zone, no leading zeros), or None."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip_family(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """4 for an IPv4 address or an IPv4-mapped IPv6 one (Go's To4 treats both as IPv4)."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return 4
    return addr.version


def parse_cidr_or_ip(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """(address, network) as Calico's ParseCIDROrIP reads a CIDR or a bare address (then /32 or
    /128), host bits allowed; None when it is neither (a netmask instead of a prefix length is not
    a CIDR)."""
    addr_text, slash, prefix = text.partition("/")
    addr = parse_ip(addr_text)
    if addr is None or (slash and not (prefix.isdigit() and prefix.isascii())):
        return None
    try:
        net = ipaddress.ip_network(f"{addr}/{prefix}" if slash else str(addr), strict=False)
    except ValueError:
        return None
    return addr, net


def network(text: str, family: int | None = None, noun: str | None = None) -> str | None:
    """A strictly masked network (no host bits) or a bare address: Calico's `net` rule, or with
    `family` 4 or 6 its `netv4` or `netv6` rule. `noun` names the value in the reason (by default
    "network", or "IPv4 network" / "IPv6 network" with a family)."""
    noun = noun or (f"IPv{family} network" if family else "network")
    parsed = parse_cidr_or_ip(text)
    if parsed is None or (family and ip_family(parsed[0]) != family):
        return f"invalid {noun} {text!r}: expected e.g. {'fd00:198:18::/64' if family == 6 else '198.18.0.0/24'}, or an address"
    addr, net = parsed
    if addr != net.network_address:
        return f"invalid {noun} {text!r}: not strictly masked, the network is {net}"
    return None


_MAC_PAIRS = re.compile(r"[0-9a-fA-F]{2}(?P<sep>[:-])[0-9a-fA-F]{2}(?:(?P=sep)[0-9a-fA-F]{2})*")
_MAC_QUADS = re.compile(r"[0-9a-fA-F]{4}(?:\.[0-9a-fA-F]{4})*")


def mac(text: str) -> str | None:
    """A MAC address as Go's net.ParseMAC reads it: 6, 8 or 20 bytes, written as hex pairs
    separated by ':' or by '-' (one separator throughout), or as dotted groups of four hex digits."""
    if _MAC_PAIRS.fullmatch(text):
        size = (len(text) + 1) // 3
    elif _MAC_QUADS.fullmatch(text):
        size = (len(text) + 1) // 5 * 2
    else:
        size = 0
    if size not in (6, 8, 20):
        return f"invalid MAC address {text!r}: expected 6, 8 or 20 hex bytes such as ee:ee:ee:ee:ee:ee"
    return None
