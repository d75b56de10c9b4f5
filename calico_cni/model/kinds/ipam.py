"""IPPool and IPReservation: the address ranges pods get addresses from, and the ones they never
get. Rules and defaults as Calico v3.30's IP pool client and validator apply them."""

from __future__ import annotations

import ipaddress
from typing import Any

from calico_cni.model import checks
from calico_cni.model.kinds.metadata import name_of, spec_value
from calico_cni.model.records import BLOCK_SIZE_RANGE, DEFAULT_BLOCK_SIZE
from calico_cni.model.schema import Bool, Column, Enum, Int, Invalid, Kind, List, Obj, Str

ENCAP_MODES = ("Never", "Always", "CrossSubnet")
LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}
# Ranges no pool may overlap besides link-local (Calico's own rule, checked first for its message):
# they are not unicast addresses a pod can use.
RESERVED = {
    4: [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32")],
    6: [ipaddress.ip_network(n) for n in ("::/128", "::1/128", "::ffff:0:0/96", "ff00::/8")],
}


def _pool_cidr(text: str) -> str | None:
    if "/" not in text:
        return f"invalid CIDR {text!r}: give a prefix length, e.g. 198.18.0.0/24 or fd00:198:18::/64"
    return checks.cidr(text)


def _prepare_pool(doc: dict[str, Any]) -> None:
    """Calico's defaults (blockSize by family, nodeSelector all(), both uses, Automatic, modes
    Never) and the rules that span fields."""
    spec = doc["spec"]
    net = ipaddress.ip_network(spec["cidr"], strict=False)
    if str(net.network_address) != str(ipaddress.ip_interface(spec["cidr"]).ip):
        raise Invalid("spec.cidr", f"IPPool CIDR is not strictly masked: the network is {net}")
    spec["cidr"] = str(net)
    if net.overlaps(LINK_LOCAL[net.version]):
        raise Invalid("spec.cidr", f"IPPool CIDR overlaps with IPv{net.version} Link Local range {LINK_LOCAL[net.version]}")
    for reserved in RESERVED[net.version]:
        if net.overlaps(reserved):
            raise Invalid("spec.cidr", f"{net} overlaps the reserved IPv{net.version} range {reserved}; pools must be unicast addresses outside it")
    spec.setdefault("blockSize", DEFAULT_BLOCK_SIZE[net.version])
    low, high = BLOCK_SIZE_RANGE[net.version]
    if not low <= spec["blockSize"] <= high:
        raise Invalid("spec.blockSize", f"IPv{net.version} block size must be between {low} and {high}, got {spec['blockSize']}")
    if not spec.get("disabled") and net.prefixlen > spec["blockSize"]:
        raise Invalid(
            "spec.cidr",
            f"IP pool size is too small for use with Calico IPAM: {net} must be equal to or greater than the block size /{spec['blockSize']}",
        )
    spec.setdefault("nodeSelector", "all()")
    spec.setdefault("allowedUses", ["Workload", "Tunnel"])
    spec.setdefault("assignmentMode", "Automatic")
    spec.setdefault("ipipMode", "Never")
    spec.setdefault("vxlanMode", "Never")
    if spec["ipipMode"] != "Never" and spec["vxlanMode"] != "Never":
        raise Invalid("spec.vxlanMode", "Cannot enable both VXLAN and IPIP on the same IPPool")
    if net.version == 6 and spec["ipipMode"] != "Never":
        raise Invalid("spec.ipipMode", "IPIP is not supported on an IPv6 IP pool")
    if "LoadBalancer" in spec["allowedUses"]:
        _check_load_balancer_pool(spec)
    _check_namespace_selector(spec)


def _check_namespace_selector(spec: dict[str, Any]) -> None:
    """`namespaceSelector` is a Calico v3.31 field, read and kept (the allocator skips a pool whose
    selector does not match the pod's namespace labels); written, it follows v3.31's validator:
    not on a pool that allows Tunnel (tunnel addresses belong to no namespace), no global()."""
    text = spec.get("namespaceSelector") or ""
    if not text:
        return
    if "Tunnel" in spec["allowedUses"]:
        raise Invalid(
            "spec.namespaceSelector",
            "IP Pool with AllowedUse Tunnel cannot have namespaceSelector specified - tunnel IPs are not namespaced resources "
            '(set allowedUses: ["Workload"])',
        )
    if "global(" in text:
        raise Invalid("spec.namespaceSelector", "global() selector is not valid for IPPool namespaceSelector - use all() instead")


def _check_load_balancer_pool(spec: dict[str, Any]) -> None:
    """A pool for service load balancer addresses is only that: no pods or tunnels, no
    encapsulation, exported over BGP, on every node (Calico's validator rules)."""
    others = [u for u in spec["allowedUses"] if u != "LoadBalancer"]
    if others:
        raise Invalid("spec.allowedUses", f"LoadBalancer cannot be used at the same time as: {', '.join(others)}")
    for mode in ("ipipMode", "vxlanMode"):
        if spec[mode] != "Never":
            raise Invalid(f"spec.{mode}", f"{mode} must be Never on a LoadBalancer IP pool")
    if spec.get("disableBGPExport"):
        raise Invalid("spec.disableBGPExport", "disableBGPExport cannot be set on a LoadBalancer IP pool")
    if spec["nodeSelector"] != "all()":
        raise Invalid("spec.nodeSelector", "a LoadBalancer IP pool must have nodeSelector all()")


def _read_pool(doc: dict[str, Any]) -> None:
    """The defaults Calico's client fills into an IP pool it reads (a record another tool wrote
    without them): block size by family, nodeSelector all(), both uses, encapsulation Never,
    assignment Automatic."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    try:
        version = ipaddress.ip_network(spec.get("cidr"), strict=False).version
    except (TypeError, ValueError):
        return
    spec["blockSize"] = spec.get("blockSize") or DEFAULT_BLOCK_SIZE[version]
    spec["allowedUses"] = spec.get("allowedUses") or ["Workload", "Tunnel"]
    spec["nodeSelector"] = spec.get("nodeSelector") or "all()"
    spec["ipipMode"] = spec.get("ipipMode") or "Never"
    spec["vxlanMode"] = spec.get("vxlanMode") or "Never"
    spec["assignmentMode"] = spec.get("assignmentMode") or "Automatic"


def _pool_immutable(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    o, n = old.get("spec") or {}, new["spec"]
    if o.get("cidr") != n.get("cidr"):
        return f"spec.cidr: IPPool CIDR cannot be modified (it is {o.get('cidr')})"
    if o.get("blockSize") != n.get("blockSize"):
        return f"spec.blockSize: IPPool BlockSize cannot be modified (it is {o.get('blockSize')})"
    if "LoadBalancer" in (o.get("allowedUses") or []) and any(u != "LoadBalancer" for u in n.get("allowedUses") or []):
        return "spec.allowedUses: IPPool allowed use cannot be changed from LoadBalancer to Workload or Tunnel"
    return None


def _bool(doc: dict, key: str) -> str:
    return "true" if spec_value(doc, key) else "false"


def _truncated(text: str, width: int = 80) -> str:
    """A long cell cut as calicoctl cuts it: at `width` characters, the last three "..."."""
    return text if len(text) <= width else text[: width - 3] + "..."


IPPOOL = Kind(
    name="IPPool",
    plural="ippools",
    aliases=("ippool", "ipp", "ipps", "pool", "pools"),
    spec=Obj(
        {
            "cidr": Str(_pool_cidr),
            "vxlanMode": Enum(*ENCAP_MODES),
            "ipipMode": Enum(*ENCAP_MODES),
            "natOutgoing": Bool(),
            "disabled": Bool(),
            "disableBGPExport": Bool(),
            "blockSize": Int(),
            "nodeSelector": Str(checks.selector),
            # Calico v3.31 and later (read and kept; checked as v3.31's validator does).
            "namespaceSelector": Str(checks.selector),
            "allowedUses": List(Enum("Workload", "Tunnel", "LoadBalancer")),
            "assignmentMode": Enum("Automatic", "Manual"),
        },
        required=("cidr",),
    ),
    spec_required=True,
    prepare=_prepare_pool,
    immutable=_pool_immutable,
    on_read=_read_pool,
    columns=(Column("NAME", name_of), Column("CIDR", lambda d: spec_value(d, "cidr")), Column("SELECTOR", lambda d: spec_value(d, "nodeSelector"))),
    wide=(
        Column("NAME", name_of),
        Column("CIDR", lambda d: spec_value(d, "cidr")),
        Column("NAT", lambda d: _bool(d, "natOutgoing")),
        Column("IPIPMODE", lambda d: spec_value(d, "ipipMode") or "Never"),
        Column("VXLANMODE", lambda d: spec_value(d, "vxlanMode") or "Never"),
        Column("DISABLED", lambda d: _bool(d, "disabled")),
        Column("DISABLEBGPEXPORT", lambda d: _bool(d, "disableBGPExport")),
        Column("SELECTOR", lambda d: spec_value(d, "nodeSelector")),
        Column("ASSIGNMENTMODE", lambda d: spec_value(d, "assignmentMode")),
    ),
)

IPRESERVATION = Kind(
    name="IPReservation",
    plural="ipreservations",
    aliases=("ipreservation", "reservation", "reservations"),
    spec=Obj({"reservedCIDRs": List(Str(checks.cidr))}),
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of), Column("CIDRS", lambda d: _truncated(",".join(spec_value(d, "reservedCIDRs") or [])))),
)

KINDS = (IPPOOL, IPRESERVATION)
