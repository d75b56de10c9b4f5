"""The cluster as the node's dataplane controllers see it, read off one cache snapshot: IP pools
with their encapsulation and NAT settings, Nodes with their addresses and tunnel endpoints, IPAM
blocks with their affinity and the addresses other nodes borrowed from them, and the Felix settings
that shape the tunnels (FelixConfiguration `default`, then `node.<name>` over it).

Pure: it reads `Snapshot.items` (key -> record with `value` and `mod_revision`) and the model. A
record that cannot be read is left out and named in `problems`, so one bad record never stops the
node from programming the rest.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from calico_cni.model import keys, selector
from calico_cni.model.records import Block, CorruptRecord

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NEVER, ALWAYS, CROSS_SUBNET = "Never", "Always", "CrossSubnet"
TUNNEL = "Tunnel"
FELIX_CONFIGURATIONS = keys.RESOURCES + "felixconfigurations/"
BLOCKS = keys.IPAM + "assignment/"

# Felix's defaults (v3.30 config_params.go): VNI, UDP port; MTU 0 = derived from the host's.
DEFAULT_VXLAN_VNI = 4096
DEFAULT_VXLAN_PORT = 4789


class StoredValue(Protocol):
    """What the cache holds per key (datastore.etcd.KeyValue)."""

    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Pool:
    """An IP pool as routing and NAT see it."""

    name: str
    cidr: IPNetwork
    vxlan_mode: str
    ipip_mode: str
    nat_outgoing: bool
    disabled: bool
    allowed_uses: tuple[str, ...]
    node_selector: str

    @property
    def encapsulation(self) -> str | None:
        """"vxlan", "ipip" or None (Calico's validation forbids both on one pool; VXLAN wins here)."""
        if self.vxlan_mode != NEVER:
            return "vxlan"
        if self.ipip_mode != NEVER:
            return "ipip"
        return None

    @property
    def cross_subnet(self) -> bool:
        """Whether the encapsulation is used only towards nodes outside this node's subnet."""
        mode = self.vxlan_mode if self.encapsulation == "vxlan" else self.ipip_mode
        return mode == CROSS_SUBNET

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether the pool's nodeSelector matches a node with `labels` (a selector that does not
        parse matches nothing)."""
        try:
            return selector.matches(self.node_selector, labels)
        except selector.SelectorError:
            return False


@dataclass(frozen=True)
class NodeInfo:
    """A Node's addresses and tunnel endpoints."""

    name: str
    labels: Mapping[str, str]
    ipv4: ipaddress.IPv4Interface | None  # spec.bgp.ipv4Address, with its prefix (its subnet)
    ipv6: ipaddress.IPv6Interface | None
    vxlan_v4: ipaddress.IPv4Address | None  # spec.ipv4VXLANTunnelAddr
    vxlan_v6: ipaddress.IPv6Address | None
    vxlan_mac: str | None  # spec.vxlanTunnelMACAddr (an operator's override, never written here)
    vxlan_mac_v6: str | None
    ipip_v4: ipaddress.IPv4Address | None  # spec.bgp.ipv4IPIPTunnelAddr

    def address(self, family: int) -> IPInterface | None:
        """Its node address of that family (with prefix), or None."""
        return self.ipv4 if family == 4 else self.ipv6

    def vxlan_address(self, family: int) -> IPAddress | None:
        """Its VXLAN tunnel address of that family, or None."""
        return self.vxlan_v4 if family == 4 else self.vxlan_v6

    def vxlan_mac_override(self, family: int) -> str | None:
        """The VTEP MAC the Node names for that family, or None (derived)."""
        return self.vxlan_mac if family == 4 else self.vxlan_mac_v6


@dataclass(frozen=True)
class BlockInfo:
    """An IPAM block: its CIDR, the node it is affine to, and each allocated address's node
    (from the allocation's `node` attribute; None when it names none)."""

    cidr: IPNetwork
    node: str | None
    addresses: tuple[tuple[IPAddress, str | None], ...]


@dataclass(frozen=True)
class FelixSettings:
    """The FelixConfiguration fields the tunnels use (None: not set, derive)."""

    vxlan_vni: int = DEFAULT_VXLAN_VNI
    vxlan_port: int = DEFAULT_VXLAN_PORT
    vxlan_mtu: int | None = None
    vxlan_mtu_v6: int | None = None
    ipip_mtu: int | None = None
    nat_outgoing_address: ipaddress.IPv4Address | None = None
    # defaultEndpointToHostAction: what a pod's traffic to its own node meets after its egress
    # policy allowed it (Felix's code default Drop; Calico's etcd manifests set Accept).
    endpoint_to_host_action: str = "Drop"


ENDPOINT_TO_HOST_ACTIONS = ("Drop", "Return", "Accept")


@dataclass(frozen=True)
class ClusterView:
    """Everything above, for one node, from one snapshot."""

    nodename: str
    pools: tuple[Pool, ...]
    nodes: Mapping[str, NodeInfo]
    blocks: tuple[BlockInfo, ...]
    felix: FelixSettings
    problems: tuple[str, ...] = field(default=())

    @property
    def me(self) -> NodeInfo | None:
        """This node's own record (None until registered, or unreadable)."""
        return self.nodes.get(self.nodename)

    def pool_of(self, net: IPNetwork | IPAddress) -> Pool | None:
        """The pool holding `net` (a block or an address), or None."""
        for pool in self.pools:
            if net.version != pool.cidr.version:
                continue
            if isinstance(net, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                if net in pool.cidr:
                    return pool
            elif net.subnet_of(pool.cidr):  # type: ignore[arg-type]
                return pool
        return None

    def encapsulated_pools(self, encapsulation: str, family: int) -> list[Pool]:
        """The pools of `family` using `encapsulation` ("vxlan" or "ipip"), in name order, disabled
        ones included (their pods keep their addresses and need their routes): while there is one,
        the encapsulation is in use on every node, as Felix's encapsulation resolver enables it."""
        return [p for p in self.pools if p.encapsulation == encapsulation and p.cidr.version == family]

    @classmethod
    def read(cls, items: Mapping[str, StoredValue], nodename: str, parsed_blocks: BlockMemo | None = None) -> "ClusterView":
        """The view of `items` (a snapshot's) for node `nodename`. `parsed_blocks`, kept by the
        caller between reads, spares parsing a block again while its revision is the same (every
        pod write changes one block; a node reads them all on each change)."""
        problems: list[str] = []
        pools: list[Pool] = []
        nodes: dict[str, NodeInfo] = {}
        blocks: list[BlockInfo] = []
        configs: dict[str, dict] = {}
        for key in sorted(items):
            value = items[key].value
            if key.startswith(keys.POOLS):
                doc = _document(key, value, problems)
                pool = _pool(key[len(keys.POOLS) :], doc, problems) if doc is not None else None
                if pool is not None:
                    pools.append(pool)
            elif key.startswith(keys.NODES):
                doc = _document(key, value, problems)
                if doc is not None:
                    name = key[len(keys.NODES) :]
                    nodes[name] = _node(name, doc, problems)
            elif key.startswith(BLOCKS):
                block = _block(key, items[key].mod_revision, value, problems, parsed_blocks)
                if block is not None:
                    blocks.append(block)
            elif key.startswith(FELIX_CONFIGURATIONS):
                doc = _document(key, value, problems)
                if doc is not None:
                    configs[key[len(FELIX_CONFIGURATIONS) :]] = doc
        felix = _felix(configs, nodename, problems)
        return cls(nodename, tuple(pools), nodes, tuple(blocks), felix, tuple(problems))


# --- reading records ----------------------------------------------------------------------------


def _document(key: str, value: bytes, problems: list[str]) -> dict | None:
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        problems.append(f"{key}: not a JSON object; ignored")
        return None
    return doc


def _spec(doc: dict) -> dict:
    spec = doc.get("spec")
    return spec if isinstance(spec, dict) else {}


def _pool(name: str, doc: dict, problems: list[str]) -> Pool | None:
    spec = _spec(doc)
    try:
        cidr = ipaddress.ip_network(str(spec["cidr"]), strict=False)
    except (KeyError, ValueError):
        problems.append(f"IPPool {name}: no valid spec.cidr; ignored")
        return None
    modes = []
    for field_name in ("vxlanMode", "ipipMode"):
        mode = spec.get(field_name) or NEVER
        if mode not in (NEVER, ALWAYS, CROSS_SUBNET):
            problems.append(f"IPPool {name}: spec.{field_name} {mode!r} is not Never, Always or CrossSubnet; taken as Never")
            mode = NEVER
        modes.append(mode)
    uses = spec.get("allowedUses") or ["Workload", TUNNEL]
    return Pool(
        name=name,
        cidr=cidr,
        vxlan_mode=modes[0],
        ipip_mode=modes[1],
        nat_outgoing=spec.get("natOutgoing") is True,
        disabled=spec.get("disabled") is True,
        allowed_uses=tuple(str(u) for u in uses) if isinstance(uses, list) else ("Workload", TUNNEL),
        node_selector=str(spec.get("nodeSelector") or "all()"),
    )


def _address(text: Any, name: str, field_name: str, problems: list[str], interface: bool) -> Any:
    """An address field of a Node: None when absent, reported and None when unusable."""
    if not text:
        return None
    try:
        value = ipaddress.ip_interface(str(text)) if interface else ipaddress.ip_address(str(text).split("/")[0])
    except ValueError:
        problems.append(f"Node {name}: {field_name} {text!r} is not an address; ignored")
        return None
    return value


def _family_of(value: Any, family: int) -> Any:
    return value if value is not None and value.version == family else None


def _mac(text: Any, name: str, field_name: str, problems: list[str]) -> str | None:
    if not text:
        return None
    parts = str(text).lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        problems.append(f"Node {name}: {field_name} {text!r} is not a MAC address; the derived one is used")
        return None
    return ":".join(parts)


def _node(name: str, doc: dict, problems: list[str]) -> NodeInfo:
    spec = _spec(doc)
    bgp = spec.get("bgp") if isinstance(spec.get("bgp"), dict) else {}
    metadata = doc.get("metadata")
    labels = (metadata.get("labels") if isinstance(metadata, dict) else None) or {}
    return NodeInfo(
        name=name,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        ipv4=_family_of(_address(bgp.get("ipv4Address"), name, "spec.bgp.ipv4Address", problems, True), 4),
        ipv6=_family_of(_address(bgp.get("ipv6Address"), name, "spec.bgp.ipv6Address", problems, True), 6),
        vxlan_v4=_family_of(_address(spec.get("ipv4VXLANTunnelAddr"), name, "spec.ipv4VXLANTunnelAddr", problems, False), 4),
        vxlan_v6=_family_of(_address(spec.get("ipv6VXLANTunnelAddr"), name, "spec.ipv6VXLANTunnelAddr", problems, False), 6),
        vxlan_mac=_mac(spec.get("vxlanTunnelMACAddr"), name, "spec.vxlanTunnelMACAddr", problems),
        vxlan_mac_v6=_mac(spec.get("vxlanTunnelMACAddrV6"), name, "spec.vxlanTunnelMACAddrV6", problems),
        ipip_v4=_family_of(_address(bgp.get("ipv4IPIPTunnelAddr"), name, "spec.bgp.ipv4IPIPTunnelAddr", problems, False), 4),
    )


# key -> (mod_revision, value, the block as read, the problem it has): see `ClusterView.read`.
# The value is compared too: after an etcd restore revisions start again, and a key can come back
# at a revision it had before with other content (comparing bytes costs far less than parsing).
BlockMemo = dict[str, tuple[int, bytes, "BlockInfo | None", "str | None"]]


def _block(key: str, revision: int, value: bytes, problems: list[str], memo: BlockMemo | None) -> BlockInfo | None:
    known = memo.get(key) if memo is not None else None
    if known is None or known[0] != revision or known[1] != value:
        known = (revision, value, *_parse_block(key, value))
        if memo is not None:
            memo[key] = known
    if known[3] is not None:
        problems.append(known[3])
    return known[2]


def _parse_block(key: str, value: bytes) -> tuple[BlockInfo | None, str | None]:
    try:
        block = Block.from_kv(key, value)
    except CorruptRecord as exc:
        return None, f"{exc}; its routes are not programmed"
    if block.deleted:
        return None, None
    net = block.network
    addresses = []
    for ordinal, attr_index in enumerate(block.allocations):
        if attr_index is None:
            continue
        attribute = block.attributes[attr_index] if 0 <= attr_index < len(block.attributes) else None
        secondary = (attribute or {}).get("secondary") if isinstance(attribute, dict) else None
        node = secondary.get("node") if isinstance(secondary, dict) else None
        addresses.append((net[ordinal], str(node) if node else None))
    return BlockInfo(net, block.affine_node, tuple(addresses)), None


# FelixConfiguration fields read here, with their valid range (Felix's validation).
_FELIX_INTS = {
    "vxlanVNI": ("vxlan_vni", 1, (1 << 24) - 1),
    "vxlanPort": ("vxlan_port", 1, 65535),
    "vxlanMTU": ("vxlan_mtu", 0, 65535),
    "vxlanMTUV6": ("vxlan_mtu_v6", 0, 65535),
    "ipipMTU": ("ipip_mtu", 0, 65535),
}


def _felix(configs: Mapping[str, dict], nodename: str, problems: list[str]) -> FelixSettings:
    """`default`, then `node.<nodename>` over it (Felix's order); a bad value is reported and the
    one below it kept."""
    values: dict[str, Any] = {}
    for name in ("default", f"node.{nodename}"):
        doc = configs.get(name)
        if doc is None:
            continue
        spec = _spec(doc)
        for field_name, (attr, low, high) in _FELIX_INTS.items():
            if spec.get(field_name) is None:
                continue
            value = spec[field_name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                problems.append(f"FelixConfiguration {name}: spec.{field_name} {value!r} is not a number from {low} to {high}; ignored")
                continue
            # An MTU of 0 is Felix's "not set: derive it from the host".
            values[attr] = (value or None) if "mtu" in attr else value
        text = spec.get("natOutgoingAddress")
        if text:
            try:
                values["nat_outgoing_address"] = ipaddress.IPv4Address(str(text))
            except ValueError:
                problems.append(f"FelixConfiguration {name}: spec.natOutgoingAddress {text!r} is not an IPv4 address; ignored")
        action = spec.get("defaultEndpointToHostAction")
        if action is not None:
            # Felix's parser takes any case ("drop", "ACCEPT").
            known = {a.lower(): a for a in ENDPOINT_TO_HOST_ACTIONS}.get(str(action).lower())
            if known is None:
                problems.append(
                    f"FelixConfiguration {name}: spec.defaultEndpointToHostAction {action!r} is not one of {', '.join(ENDPOINT_TO_HOST_ACTIONS)}; ignored"
                )
            else:
                values["endpoint_to_host_action"] = known
    return FelixSettings(**values)
