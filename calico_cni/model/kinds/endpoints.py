"""WorkloadEndpoint and HostEndpoint: the interfaces Calico polices. Rules, name and labels as
Calico v3.30's validator and workload-endpoint client apply them.

A WorkloadEndpoint's name is made of its identifiers, joined by '-' (a '-' inside one is doubled):
`node-k8s-pod-endpoint`, `node-cni-containerID-endpoint`, `node-libnetwork-libnetwork-endpoint`,
and `node-orchestrator-workload-endpoint` for any other orchestrator. A given name must be that
name; a missing one is filled in. Every write stamps the labels `projectcalico.org/namespace` and
`projectcalico.org/orchestrator`. Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from functools import partial

from calico_cni.model import checks
from calico_cni.model.kinds.metadata import name_of, spec_value
from calico_cni.model.kinds.policy_rules import Protocol, port_name, supports_ports
from calico_cni.model.schema import Column, Int, Invalid, Kind, List, Obj, Str, join

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")


def container_id(text: str) -> str | None:
    """A container ID: letters, digits and '-', starting and ending with a letter or digit."""
    if not _CONTAINER_ID.match(text):
        return f"invalid container ID {text!r}: letters, digits and '-', starting and ending with a letter or digit"
    return None


# Calico's `net` rule (a network without host bits, or an address), worded as endpoints' refusals say it.
_IP_NETWORK = partial(checks.network, noun="IP network")


def _ipv(version: int):
    def check(text: str) -> str | None:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return f"invalid IPv{version} address {text!r}"
        if address.version != version and not (version == 4 and getattr(address, "ipv4_mapped", None)):
            return f"invalid IPv{version} gateway address {text!r}: expected an IPv{version} address"
        return None

    return check


def _endpoint_port_check(obj: dict, path: str) -> None:
    if not supports_ports(obj.get("protocol")):
        raise Invalid(join(path, "protocol"), "EndpointPort protocol does not support ports: use TCP, UDP or SCTP")


ENDPOINT_PORT = Obj(
    {"name": Str(port_name), "protocol": Protocol(), "port": Int(1, 65535)},
    required=("name", "protocol", "port"),
    check=_endpoint_port_check,
)


def _workload_port_check(obj: dict, path: str) -> None:
    if not supports_ports(obj.get("protocol")):
        raise Invalid(join(path, "protocol"), "WorkloadEndpointPort protocol does not support ports: use TCP, UDP or SCTP")
    if not obj.get("name") and not obj.get("hostPort"):
        raise Invalid(join(path, "name"), "WorkloadEndpointPort name must not be empty if no HostPort is specified")


WORKLOAD_PORT = Obj(
    {
        "name": Str(lambda n: None if n == "" else port_name(n)),
        "protocol": Protocol(),
        "port": Int(1, 65535),
        "hostPort": Int(0, 65535),
        "hostIP": Str(lambda t: None if t == "" else _IP_NETWORK(t)),
    },
    required=("protocol", "port"),
    check=_workload_port_check,
)


def _ip_nat_check(obj: dict, path: str) -> None:
    internal = ipaddress.ip_address(obj["internalIP"])
    external = ipaddress.ip_address(obj["externalIP"])
    if internal.version != external.version:
        raise Invalid(join(path, "externalIP"), "mismatched IP versions: internalIP and externalIP must be of the same family")


IP_NAT = Obj({"internalIP": Str(checks.ip), "externalIP": Str(checks.ip)}, required=("internalIP", "externalIP"), check=_ip_nat_check)

QOS_CONTROLS = Obj(
    {
        name: Int()
        for name in (
            "ingressBandwidth",
            "egressBandwidth",
            "ingressBurst",
            "egressBurst",
            "ingressPacketRate",
            "egressPacketRate",
            "ingressMaxConnections",
            "egressMaxConnections",
        )
    }
)


def _workload_spec_check(spec: dict, path: str) -> None:
    """Calico's rules across a workload endpoint's fields: each network one address, and each NAT's
    internal address one of them."""
    networks = []
    for i, text in enumerate(spec.get("ipNetworks") or []):
        net = ipaddress.ip_network(text, strict=False)
        if net.num_addresses != 1:
            raise Invalid(
                join(join(path, "ipNetworks"), i), f"IP network contains multiple addresses: {text}; an endpoint's networks are single addresses (/32 or /128)"
            )
        networks.append(net)
    for i, nat in enumerate(spec.get("ipNATs") or []):
        internal = ipaddress.ip_address(nat["internalIP"])
        if not any(internal in net for net in networks if net.version == internal.version):
            raise Invalid(join(join(path, "ipNATs"), i), f"NAT is not in the endpoint networks: internalIP {nat['internalIP']} must be one of ipNetworks")


WORKLOAD_SPEC = Obj(
    {
        "orchestrator": Str(checks.dns_subdomain),
        "workload": Str(checks.dns_subdomain),
        "node": Str(checks.dns_subdomain),
        "containerID": Str(container_id),
        "pod": Str(checks.dns_subdomain),
        "endpoint": Str(checks.dns_subdomain),
        "serviceAccountName": Str(checks.dns_subdomain),
        "ipNetworks": List(Str(_IP_NETWORK)),
        "ipNATs": List(IP_NAT),
        "ipv4Gateway": Str(_ipv(4)),
        "ipv6Gateway": Str(_ipv(6)),
        "profiles": List(Str(checks.dns_subdomain)),
        "interfaceName": Str(checks.interface_or_any),
        "mac": Str(checks.mac),
        "ports": List(WORKLOAD_PORT),
        "allowSpoofedSourcePrefixes": List(Str(checks.cidr)),
        "qosControls": QOS_CONTROLS,
    },
    required=("interfaceName",),
    check=_workload_spec_check,
)


def _segments(spec: dict) -> list[str]:
    """The spec fields a workload endpoint's name is made of, by orchestrator."""
    orchestrator = spec.get("orchestrator", "")
    third = {"k8s": "pod", "cni": "containerID", "libnetwork": "orchestrator"}.get(orchestrator, "workload")
    return ["node", "orchestrator", third, "endpoint"]


def workload_endpoint_name(spec: dict) -> str:
    """The name Calico gives a workload endpoint with these identifiers; `Invalid` naming the spec
    field when one is missing or starts or ends with '-'."""
    if not spec.get("node"):
        raise Invalid("spec.node", "field should be assigned: a workload endpoint's name is made of node, orchestrator, its workload and endpoint")
    parts = []
    for field in _segments(spec):
        value = spec.get(field) or ""
        if not value:
            raise Invalid(
                join("spec", field),
                f"field should be assigned: the name of a {spec.get('orchestrator') or '<orchestrator>'} workload endpoint is {'-'.join(_segments(spec))}",
            )
        if value.startswith("-") or value.endswith("-"):
            raise Invalid(join("spec", field), f"field must not begin or end with a '-': {value!r}")
        parts.append(value.replace("-", "--"))
    return "-".join(parts)


def _prepare_workload(doc: dict) -> None:
    meta, spec = doc["metadata"], doc["spec"]
    expected = workload_endpoint_name(spec)
    if not meta.get("name"):
        meta["name"] = expected
    elif meta["name"] != expected:
        raise Invalid("metadata.name", f"the WorkloadEndpoint name does not match the primary identifiers assigned in the Spec: expected name {expected}")
    meta["labels"] = {**(meta.get("labels") or {}), NAMESPACE_LABEL: meta.get("namespace") or "default", ORCHESTRATOR_LABEL: spec.get("orchestrator", "")}


def _joined(doc: dict, key: str) -> str:
    return ",".join(str(v) for v in spec_value(doc, key) or [])


def _nats(doc: dict) -> str:
    # Go prints each NAT as a struct: {internal external}.
    return ",".join(f"{{{n.get('internalIP', '')} {n.get('externalIP', '')}}}" for n in spec_value(doc, "ipNATs") or [])


def _workload(doc: dict) -> str:
    return spec_value(doc, "workload") or spec_value(doc, "pod")


WORKLOAD_ENDPOINT = Kind(
    name="WorkloadEndpoint",
    name_from_spec=True,
    plural="workloadendpoints",
    namespaced=True,
    aliases=("workloadendpoint", "workloadendpoints", "wep", "weps"),
    spec=WORKLOAD_SPEC,
    prepare=_prepare_workload,
    columns=(
        Column("WORKLOAD", _workload),
        Column("NODE", lambda d: spec_value(d, "node")),
        Column("NETWORKS", lambda d: _joined(d, "ipNetworks")),
        Column("INTERFACE", lambda d: spec_value(d, "interfaceName")),
    ),
    wide=(
        Column("NAME", name_of),
        Column("WORKLOAD", _workload),
        Column("NODE", lambda d: spec_value(d, "node")),
        Column("NETWORKS", lambda d: _joined(d, "ipNetworks")),
        Column("INTERFACE", lambda d: spec_value(d, "interfaceName")),
        Column("PROFILES", lambda d: _joined(d, "profiles")),
        Column("NATS", _nats),
    ),
)


def _host_spec_check(spec: dict, path: str) -> None:
    if not spec.get("interfaceName") and not spec.get("expectedIPs"):
        raise Invalid(join(path, "interfaceName"), "no interface or expected IPs have been specified: give interfaceName, expectedIPs or both")
    if not spec.get("node"):
        raise Invalid(join(path, "node"), "no node has been specified")


HOST_ENDPOINT = Kind(
    name="HostEndpoint",
    plural="hostendpoints",
    aliases=("hostendpoint", "hostendpoints", "hep", "heps"),
    spec=Obj(
        {
            "node": Str(checks.dns_subdomain),
            "interfaceName": Str(checks.interface_or_any),
            "expectedIPs": List(Str(checks.ip)),
            "profiles": List(Str(checks.dns_subdomain)),
            "ports": List(ENDPOINT_PORT),
        },
        check=_host_spec_check,
    ),
    columns=(Column("NAME", name_of), Column("NODE", lambda d: spec_value(d, "node"))),
    wide=(
        Column("NAME", name_of),
        Column("NODE", lambda d: spec_value(d, "node")),
        Column("INTERFACE", lambda d: spec_value(d, "interfaceName")),
        Column("IPS", lambda d: _joined(d, "expectedIPs")),
        Column("PROFILES", lambda d: _joined(d, "profiles")),
    ),
)

KINDS = (WORKLOAD_ENDPOINT, HOST_ENDPOINT)
