"""The rules of Calico's policies and profiles (`Rule`, `EntityRule` and their parts), with the
checks Calico v3.30's validator applies to them. Used by `policy` (NetworkPolicy,
GlobalNetworkPolicy, Profile). Standard library only.

Two facts worth knowing, both Calico's:
- protocol names are case-sensitive (`TCP`, not `tcp`); a number is 1 to 255 and a string of
  digits is that number (stored as a number);
- a port is a number, a `"min:max"` range, or a named port (a Kubernetes port name); `"80"` and
  `"80:80"` are stored as the number 80.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from calico_cni.model import checks
from calico_cni.model.schema import Enum, Field, Int, Invalid, List, Map, Obj, Str, join, type_name

# Calico's protocol names, in its order, with their IANA numbers (the one protocol table: the
# validator checks names against it, Felix's renderers match on the numbers).
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PROTOCOL_NAMES = tuple(PROTOCOL_NUMBERS)
# Protocols whose packets have ports, by name and by number.
_PORTED = ("TCP", "UDP", "SCTP")
PORT_PROTOCOLS = _PORTED + tuple(PROTOCOL_NUMBERS[n] for n in _PORTED)
ACTIONS = ("Allow", "Deny", "Log", "Pass")
GLOBAL_SELECTOR = "global()"
ANNOTATIONS_LIMIT = 256 * 1024
# Not Calico's: Calico accepts any number of rules. We refuse more ingress (or egress) rules than
# this in one policy or profile because each change is compiled into one nft transaction; a
# runaway list would make every update of that policy slow for the whole node.
MAX_RULES_PER_DIRECTION = 5000

PORTS_NEED_PROTOCOL = "rules that specify ports must set protocol to TCP or UDP or SCTP"
ICMP_NEEDS_PROTOCOL = "rules that specify ICMP fields must set protocol to ICMP or ICMPv6"
HTTP_NEEDS_TCP = "rules that specify HTTP fields must set protocol to TCP or empty"
GLOBAL_ONLY_IN_NAMESPACE_SELECTOR = f"{GLOBAL_SELECTOR} can only be used in an EntityRule namespaceSelector"

_PORT_NAME_CHARS = re.compile(r"^[a-zA-Z0-9_.-]{1,128}\Z")
_PORT_RANGE = re.compile(r"^(\d+):(\d+)\Z")
_ONLY_GLOBAL = re.compile(r"^\s*global\(\s*\)\s*\Z")


class Protocol(Field):
    """A rule's or a port's protocol: one of Calico's names, spelt exactly as Calico spells them
    (its validator refuses `tcp`), or a number 1 to 255 (a string of digits is that number)."""

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, str) and value.isdigit() and int(value) <= 255:
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 255:
                raise Invalid(path, f"protocol number invalid: {value}: expected 1 to 255 or a name ({', '.join(PROTOCOL_NAMES)})")
            return value
        if not isinstance(value, str):
            raise Invalid(path, f"expected a protocol name or number, got {type_name(value)}")
        if value in PROTOCOL_NAMES:
            return value
        hint = next((f" (names are case-sensitive: use {n!r})" for n in PROTOCOL_NAMES if n.lower() == value.lower()), "")
        raise Invalid(path, f"protocol name invalid: {value!r}: expected one of {', '.join(PROTOCOL_NAMES)} or a number 1 to 255{hint}")


def supports_ports(protocol: Any) -> bool:
    """Whether packets of `protocol` (decoded) have ports: TCP, UDP and SCTP."""
    return protocol in PORT_PROTOCOLS


def port_name(name: str) -> str | None:
    """A named port: a Kubernetes port name (at most 15 lower-case letters, digits and '-', at
    least one letter, no '--', not starting or ending with '-')."""
    problems = []
    if len(name) > 15:
        problems.append("at most 15 characters")
    if not re.fullmatch(r"[-a-z0-9]+", name):
        problems.append("only lower-case letters, digits and '-'")
    elif not re.search(r"[a-z]", name):
        problems.append("at least one letter")
    if "--" in name:
        problems.append("no consecutive '-'")
    if name.startswith("-") or name.endswith("-"):
        problems.append("not starting or ending with '-'")
    if problems:
        return f"invalid port name {name!r}: a named port needs {', '.join(problems)}"
    return None


_PORT_RANGE_MESSAGE = "port range invalid, port number must be between 1 and 65535"


class Port(Field):
    """A rule's port: a number 1 to 65535, a "min:max" range (min <= max), or a named port.
    Returned as Calico stores it: a number for a single port, "min:max" for a range."""

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 65535:
                raise Invalid(path, f"{_PORT_RANGE_MESSAGE}, got {value}")
            return value
        if not isinstance(value, str):
            raise Invalid(path, f'expected a port number, a "min:max" range or a port name, got {type_name(value)}')
        if value.isdigit():
            number = int(value)
            if number > 65535:
                raise Invalid(path, f"invalid port format ({value}): expected 1 to 65535")
            return self.decode(number, path)
        match = _PORT_RANGE.match(value)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if low > 65535:
                raise Invalid(path, f"invalid minimum port number in range ({value}): expected 1 to 65535")
            if high > 65535:
                raise Invalid(path, f"invalid maximum port number in range ({value}): expected 1 to 65535")
            if low > high:
                raise Invalid(path, f"minimum port number ({low}) is greater than maximum port number ({high}) in port range")
            if low < 1:
                raise Invalid(path, f"{_PORT_RANGE_MESSAGE}, got {value}")
            return low if low == high else f"{low}:{high}"
        if not _PORT_NAME_CHARS.match(value):
            raise Invalid(path, f'invalid name for named port ({value}): expected a number, a "min:max" range or a port name')
        reason = port_name(value)
        if reason:
            raise Invalid(path, reason)
        return value


def rule_net(text: str) -> str | None:
    """A rule's `nets` entry: a network with its prefix length, strictly masked (Calico refuses a
    bare address and host bits here, unlike in a network set)."""
    if "/" not in text:
        return f"invalid CIDR {text!r}: rule nets need a prefix length, e.g. 10.0.0.1/32 or 198.18.0.0/24"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"invalid CIDR {text!r}: expected an IPv4 or IPv6 network such as 198.18.0.0/24"
    if net.network_address != ipaddress.ip_interface(text).ip:
        return f"invalid CIDR {text!r}: not strictly masked, the network is {net}"
    return None


def selector_check(text: str) -> str | None:
    """A selector in Calico's language; one nested too deeply for the parser (which recurses per
    level: a few hundred levels) is refused with a message, not a RecursionError. Calico's parser has
    no such limit, but no real selector comes near it."""
    try:
        return checks.selector(text)
    except RecursionError:
        return f"invalid selector {text[:60]!r}...: nested too deeply ({len(text)} characters); simplify it"


def entity_selector(text: str) -> str | None:
    """An EntityRule's `selector`: a selector without global(), which only a namespaceSelector takes."""
    if GLOBAL_SELECTOR in text:
        return GLOBAL_ONLY_IN_NAMESPACE_SELECTOR
    return selector_check(text)


def endpoint_selector(text: str) -> str | None:
    """A policy's endpoint selector (`selector`, `serviceAccountSelector`, a GNP's
    `namespaceSelector`): a selector without global()."""
    return entity_selector(text)


def namespace_selector(text: str) -> str | None:
    """An EntityRule's `namespaceSelector`: a selector, or global() alone."""
    if "global(" in text and text != GLOBAL_SELECTOR and not _ONLY_GLOBAL.match(text):
        return f"{GLOBAL_SELECTOR} cannot be combined with other selectors"
    return selector_check(text)


def _icmp_check(obj: dict, path: str) -> None:
    if "code" in obj and "type" not in obj:
        raise Invalid(join(path, "code"), "ICMP code specified without an ICMP type: set type too")


ICMP = Obj({"type": Int(0, 254), "code": Int(0, 255)}, check=_icmp_check)


def _services_check(obj: dict, path: str) -> None:
    if not obj.get("name"):
        raise Invalid(join(path, "name"), "must specify a service name")


SERVICE_MATCH = Obj({"name": Str(checks.dns_subdomain), "namespace": Str(checks.dns_subdomain)}, check=_services_check)
SERVICE_ACCOUNT_MATCH = Obj({"names": List(Str()), "selector": Str(selector_check)})


def _entity_check(obj: dict, path: str) -> None:
    if "services" not in obj:
        return
    where = join(path, "services")
    if obj.get("namespaceSelector"):
        raise Invalid(where, "cannot specify NamespaceSelector and Services on the same rule")
    if obj.get("selector") or obj.get("notSelector"):
        raise Invalid(where, "cannot specify Selector/NotSelector and Services on the same rule")
    if "serviceAccounts" in obj:
        raise Invalid(where, "cannot specify ServiceAccounts and Services on the same rule")
    if obj.get("nets") or obj.get("notNets"):
        raise Invalid(where, "cannot specify Nets/NotNets and Services on the same rule")


ENTITY_RULE = Obj(
    {
        "nets": List(Str(rule_net)),
        "notNets": List(Str(rule_net)),
        "selector": Str(entity_selector),
        "notSelector": Str(selector_check),
        "namespaceSelector": Str(namespace_selector),
        "ports": List(Port()),
        "notPorts": List(Port()),
        "serviceAccounts": SERVICE_ACCOUNT_MATCH,
        "services": SERVICE_MATCH,
    },
    check=_entity_check,
)


def _methods_check(methods: list) -> str | None:
    if len(set(methods)) != len(methods):
        return f"Invalid methods (duplicates): {', '.join(methods)}"
    return None


def _path_check(obj: dict, path: str) -> None:
    if obj.get("exact") and obj.get("prefix"):
        raise Invalid(path, "Invalid path match. Both 'exact' and 'prefix' are set: give one")
    value = obj.get("exact") or obj.get("prefix")
    if not value:
        raise Invalid(path, "Invalid path match. Either 'exact' or 'prefix' must be set")
    if not value.startswith("/") or any(c in value for c in "? #"):
        raise Invalid(path, f"Invalid path {value}: must start with '/' and not contain '?', '#' or a space")


HTTP_MATCH = Obj({"methods": List(Str(), check=_methods_check), "paths": List(Obj({"exact": Str(), "prefix": Str()}, check=_path_check))})


def _annotations_check(obj: dict, path: str) -> None:
    annotations = obj.get("annotations") or {}
    for key in annotations:
        reason = checks.label_key(key.lower())
        if reason:
            raise Invalid(join(join(path, "annotations"), key), reason.replace("label key", "annotation key"))
    size = sum(len(k) + len(v) for k, v in annotations.items())
    if size > ANNOTATIONS_LIMIT:
        raise Invalid(join(path, "annotations"), f"total size of annotations is too large by {size - ANNOTATIONS_LIMIT} bytes")


RULE_METADATA = Obj({"annotations": Map(Str())}, check=_annotations_check)


def _ip_version(value: int) -> str | None:
    return None if value in (4, 6) else f"invalid IP version {value}: expected 4 or 6"


def _rule_check(rule: dict, path: str) -> None:
    """The rules Calico's validator applies across a rule's fields, in its order."""
    _check_protocol(rule, path)
    _check_address_family(rule, path)
    _check_http_action(rule, path)
    _check_service_ports(rule, path)


def _check_protocol(rule: dict, path: str) -> None:
    """What the protocol allows: ports only with TCP, UDP or SCTP; an HTTP match only with TCP
    (or no protocol); an ICMP match only with protocol ICMP or ICMPv6."""
    protocol = rule.get("protocol")
    if not supports_ports(protocol):
        for side in ("source", "destination"):
            for field in ("ports", "notPorts"):
                if (rule.get(side) or {}).get(field):
                    raise Invalid(join(join(path, side), field), PORTS_NEED_PROTOCOL)
    if "http" in rule and protocol is not None and protocol != "TCP":
        raise Invalid(join(path, "protocol"), HTTP_NEEDS_TCP)
    if "icmp" in rule and protocol not in ("ICMP", "ICMPv6"):
        raise Invalid(join(path, "icmp"), ICMP_NEEDS_PROTOCOL)


def _check_address_family(rule: dict, path: str) -> None:
    """One address family per rule: ipVersion 4 with (not)protocol ICMP and 6 with ICMPv6; every
    network of nets and notNets (both sides) in ipVersion's family when set, and all in one family."""
    version = rule.get("ipVersion")
    protocols = (rule.get("protocol"), rule.get("notProtocol"))
    if "ICMP" in protocols and version is not None and version != 4:
        raise Invalid(join(path, "ipVersion"), "must set ipVersion to 4 with protocol ICMP")
    if "ICMPv6" in protocols and version is not None and version != 6:
        raise Invalid(join(path, "ipVersion"), "must set ipVersion to 6 with protocol ICMPv6")
    seen: set[int] = set()
    for side in ("source", "destination"):
        for field in ("nets", "notNets"):
            nets = (rule.get(side) or {}).get(field) or []
            versions = {ipaddress.ip_network(n, strict=False).version for n in nets}
            where = join(join(path, side), field)
            if version is not None and versions - {version}:
                raise Invalid(where, f"rule IP version doesn't match CIDR version: ipVersion is {version}")
            if len(versions | seen) > 1:
                raise Invalid(where, "rule contains both IPv4 and IPv6 CIDRs")
            seen |= versions


def _check_http_action(rule: dict, path: str) -> None:
    """An HTTP match only in an Allow rule."""
    if "http" in rule and rule.get("action") != "Allow":
        raise Invalid(join(path, "http"), "HTTP match criteria are only valid for Allow rules")


def _check_service_ports(rule: dict, path: str) -> None:
    """A destination that selects services takes its ports from them: no ports or notPorts."""
    destination = rule.get("destination") or {}
    if "services" in destination:
        if destination.get("ports"):
            raise Invalid(join(join(path, "destination"), "ports"), "cannot specify ports with a service selector")
        if destination.get("notPorts"):
            raise Invalid(join(join(path, "destination"), "notPorts"), "cannot specify notports with a service selector")


RULE = Obj(
    {
        "action": Enum(*ACTIONS),
        "ipVersion": Int(check=_ip_version),
        "protocol": Protocol(),
        "notProtocol": Protocol(),
        "icmp": ICMP,
        "notICMP": ICMP,
        "source": ENTITY_RULE,
        "destination": ENTITY_RULE,
        "http": HTTP_MATCH,
        "metadata": RULE_METADATA,
    },
    required=("action",),
    check=_rule_check,
)


class _Rules(List):
    """One direction's rules, at most MAX_RULES_PER_DIRECTION of them (counted before any rule is
    decoded, so a runaway list is refused at once)."""

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, list) and len(value) > MAX_RULES_PER_DIRECTION:
            raise Invalid(
                path,
                f"{len(value)} rules: at most {MAX_RULES_PER_DIRECTION} per direction are accepted here "
                "(Calico has no such limit; this node daemon applies each policy change as one nftables transaction)",
            )
        return super().decode(value, path)


RULES = _Rules(RULE)


def check_directions(spec: dict, global_policy: bool) -> None:
    """The rules that depend on a rule's direction: services only as an ingress rule's source or
    an egress rule's destination, no HTTP match in egress rules, and (in a GlobalNetworkPolicy) a
    service's namespace."""
    for i, rule in enumerate(spec.get("egress") or []):
        where = join("spec.egress", i)
        if "services" in (rule.get("source") or {}):
            raise Invalid(join(where, "source.services"), "services are not allowed in egress rule source")
        if "http" in rule:
            raise Invalid(join(where, "http"), "HTTP match criteria are not allowed in egress rules")
    for i, rule in enumerate(spec.get("ingress") or []):
        if "services" in (rule.get("destination") or {}):
            raise Invalid(join(join("spec.ingress", i), "destination.services"), "services are not allowed in ingress rule destination")
    if global_policy:
        for direction, side in (("egress", "destination"), ("ingress", "source")):
            for i, rule in enumerate(spec.get(direction) or []):
                services = (rule.get(side) or {}).get("services")
                if services is not None and not services.get("namespace"):
                    raise Invalid(
                        join(join(f"spec.{direction}", i), f"{side}.services.namespace"),
                        "must specify a namespace (a GlobalNetworkPolicy's service names are not in a namespace)",
                    )
