"""Who this node speaks BGP with, worked out as Calico v3.30's confd does in etcd mode: the nodes as
BGP sees them, the node-to-node mesh, and the BGPPeer resources expanded into sessions (global
peers, per-node peers by `node` or `nodeSelector`, `peerSelector` peers, and the reverse peerings
Calico adds so that one resource configures both ends).

Every resource is decoded with its kind (`model.kinds`) before anything is read from it, and every
value that reaches BIRD's configuration is held here as a parsed value (an `ipaddress` address, an
int in BIRD's range), never as the text that was stored. A resource that does not decode, or holds
a value BIRD would refuse, is left out and named in `problems`, as Calico's syncer drops a value it
cannot parse. Pure: standard library and `calico_cni.model` only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from calico_cni.model import kinds
from calico_cni.model.kinds.routing import duration_nanos, split_peer_ip
from calico_cni.model.schema import Invalid, unknown_fields_skipped
from calico_cni.model.selector import Matcher, SelectorError, parse

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_AS = 64512
# BGP's restart time is a 12-bit field of the graceful restart capability.
MAX_RESTART_TIME = 4095
_SAFE_NAME = re.compile(r"^#?[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")


# --- decoding -----------------------------------------------------------------------------------


def label(kind: str, name: Any) -> str:
    """How a problem names a resource: `Kind(name)`; a name that is not a plain resource name is
    quoted, so a hostile one cannot forge a log line."""
    shown = name if isinstance(name, str) and _SAFE_NAME.match(name) else repr(name)
    return f"{kind}({shown})"


def decoded(kind: str, doc: Any, name: str, problems: list[str]) -> dict | None:
    """`doc` decoded as a `kind` resource (Calico's rules and defaults; fields a later release added
    are skipped), or None with the reason appended to `problems`."""
    shown = label(kind, name)
    if not isinstance(doc, dict):
        problems.append(f"{shown}: not a JSON object; left out of the BIRD configuration")
        return None
    if doc.get("kind", kind) != kind:
        problems.append(f"{shown}: stored as kind {doc.get('kind')!r}, not {kind}; left out of the BIRD configuration")
        return None
    try:
        # As stored: a field of a later Calico release is skipped, not a reason to drop the record
        # (a Node dropped here would vanish from every node's mesh).
        with unknown_fields_skipped():
            _, out = kinds.decode({"apiVersion": kinds.API_VERSION, "kind": kind, **doc})
    except Invalid as exc:
        problems.append(f"{shown}: {exc}; left out of the BIRD configuration")
        return None
    except Exception as exc:  # noqa: BLE001 - one resource must not stop the rendering of the others
        # The decoder fails on some values other than by Invalid: a 5000-digit number passes
        # Python's int() limit, a deeply nested selector its recursion limit.
        problems.append(f"{shown}: could not be read ({type(exc).__name__}: {exc}); left out of the BIRD configuration")
        return None
    return out


def name_of(doc: Any, fallback: str) -> str:
    """A document's metadata.name, else `fallback` (for messages about a document too broken to
    decode)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else fallback


def duration_seconds(text: str) -> int:
    """A decoded Go duration ("1m30s", "-2s", "500ms") in whole seconds, rounded half away from
    zero as Calico rounds it."""
    nanos = duration_nanos(text)
    whole = (abs(nanos) + 10**9 // 2) // 10**9
    return -whole if nanos < 0 else whole


def restart_time(value: Any, field_name: str, shown: str, problems: list[str]) -> int | None:
    """A decoded restart-time duration in seconds when BIRD can carry it, else None (reported)."""
    if value is None:
        return None
    seconds = duration_seconds(value)
    if not 0 <= seconds <= MAX_RESTART_TIME:
        problems.append(f"{shown}: {field_name} {value} is outside 0s to {MAX_RESTART_TIME}s (BGP's restart time field); not rendered")
        return None
    return seconds


def canonical(addr: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries (Go's To4 reads it so)."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _plain(text: Any) -> str:
    # ipaddress accepts an IPv6 zone ("fd00::1%anything"), which would carry any text into BIRD's
    # configuration: only a plain address or network is read.
    if not isinstance(text, str) or "%" in text:
        raise ValueError(f"{text!r} is not a plain address")
    return text


def address(text: Any) -> Address:
    """An address (an IPv4-mapped one as IPv4); ValueError for anything else, a zone included."""
    return canonical(ipaddress.ip_address(_plain(text)))


def interface_address(text: Any) -> Address:
    """The address of an `ip/prefix` (or a bare ip); ValueError for anything else."""
    return canonical(ipaddress.ip_interface(_plain(text)).ip)


def network(text: Any) -> Network:
    """A network with no host bits set; ValueError for anything else, a zone included."""
    return ipaddress.ip_network(_plain(text))


def unusable(addr: Address) -> str | None:
    """Why BIRD cannot speak BGP with this address (a session to it would be refused or mean
    nothing), or None."""
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        return "not a unicast address of another host"
    if addr.is_link_local:
        return "link-local (BIRD needs an interface for it)"
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return None


# --- nodes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """One Node as BGP sees it."""

    name: str
    labels: Mapping[str, str]
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    asn: int | None  # its own AS number, None = the cluster's
    rr_cluster_id: str  # "" unless it is a route reflector

    def address(self, family: int) -> Address | None:
        """Its address of that family (4 or 6), or None."""
        return self.ipv4 if family == 4 else self.ipv6


def _node_address(bgp: dict, key: str, shown: str, problems: list[str]) -> Address | None:
    """A node's address of one family; None when absent or unusable for BGP (reported)."""
    if not bgp.get(key):
        return None
    addr = interface_address(bgp[key])
    reason = unusable(addr)
    if reason:
        problems.append(f"{shown}: spec.bgp.{key} {addr} is {reason}; not used for BGP")
        return None
    return addr


def read_node(name: str, doc: Any, problems: list[str]) -> NodeInfo | None:
    """A Node document as BGP sees it; None (reported) when it does not decode. An address BGP
    cannot use is dropped and reported; the rest of the node stays."""
    out = decoded("Node", doc, name, problems)
    if out is None:
        return None
    bgp, shown = out["spec"].get("bgp") or {}, label("Node", name)
    try:
        ipv4 = _node_address(bgp, "ipv4Address", shown, problems)
        ipv6 = _node_address(bgp, "ipv6Address", shown, problems)
        rr = address(bgp["routeReflectorClusterID"]) if bgp.get("routeReflectorClusterID") else ""
    except ValueError as exc:
        problems.append(f"{shown}: {exc}; left out of the BIRD configuration")
        return None
    return NodeInfo(
        name=name,
        labels=dict(out["metadata"].get("labels") or {}),
        ipv4=ipv4,  # type: ignore[arg-type]  # the decoder checked the family
        ipv6=ipv6,  # type: ignore[arg-type]
        asn=bgp.get("asNumber"),
        rr_cluster_id=str(rr),
    )


@dataclass(frozen=True)
class Cluster:
    """The nodes and the cluster-wide BGP settings a peering needs to know about other nodes."""

    nodes: Mapping[str, NodeInfo]
    global_as: int = DEFAULT_AS
    global_port: int = 0  # 0: not set (BIRD's 179)
    node_ports: Mapping[str, int] = field(default_factory=dict)

    def as_of(self, name: str) -> int:
        """The AS number a node speaks from."""
        own = self.nodes[name].asn
        return own if own else self.global_as

    def port_of(self, name: str) -> int:
        """The port a node listens on (its own BGPConfiguration's, else the cluster's; 0 = 179)."""
        return self.node_ports.get(name) or self.global_port

    def matching(self, matcher: Matcher) -> list[str]:
        """The names of the nodes whose labels a selector matches, sorted."""
        return [name for name in sorted(self.nodes) if matcher(self.nodes[name].labels)]

    def has_address(self, addr: Address) -> bool:
        """Whether some node has this address (such a peer is a Calico node)."""
        return any(addr in (n.ipv4, n.ipv6) for n in self.nodes.values())

    def nodes_at(self, addr: Address, asn: int, port: int) -> list[str]:
        """The nodes a peerIP with this AS (0: the cluster's) and port (0: any) designates, as
        Calico matches them."""
        wanted_as = asn or self.global_as
        found = []
        for name in sorted(self.nodes):
            node = self.nodes[name]
            if addr not in (node.ipv4, node.ipv6) or self.as_of(name) != wanted_as:
                continue
            if port and not self._listens_on(name, port):
                continue
            found.append(name)
        return found

    def _listens_on(self, name: str, port: int) -> bool:
        # Calico's rule, quirks included: a node's own port must match when it has one, and a
        # cluster-wide port, when set, must match too; with neither set, any port matches.
        own = self.node_ports.get(name)
        if own and own != port:
            return False
        return not (self.global_port and self.global_port != port)


# --- sessions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """One BGP session of this node, with everything its BIRD protocol block needs."""

    kind: str  # "Mesh", "Global" or "Node": the protocol name's prefix, as Calico names them
    ip: Address
    asn: int
    port: int = 0  # the peer's port; 0 = 179
    origin: str = ""  # the resource it comes from, for messages
    use_node_ip: bool = True  # source address: this node's address of the family
    calico_node: bool = False  # the peer is a Calico node (a Global peer then connects to us or we to it)
    keep_next_hop: bool = False
    ttl_security: int = 0  # hops; 0 = off
    allow_local_as: int = 0
    reachable_by: Address | None = None
    restart_time: int | None = None
    rr_cluster_id: str = ""  # the peer's route reflector cluster id
    filters: tuple[str, ...] = ()

    @property
    def family(self) -> int:
        """4 or 6: the session's one channel."""
        return self.ip.version

    @property
    def higher_address_connects(self) -> bool:
        """Whether the end whose address sorts after the other's (as text, as Calico compares them)
        connects and the other waits (passive): one direction only, so that a graceful restart is
        not cut short by the other end's connection. Calico does so in the mesh and for a global
        peer that is a Calico node."""
        return self.kind == "Mesh" or (self.kind == "Global" and self.calico_node)

    @property
    def name(self) -> str:
        """The protocol name Calico gives it: Mesh_<ip>, Global_<ip>[_port_<p>], Node_<ip>[...]."""
        ident = str(self.ip).replace(".", "_").replace(":", "_")
        if self.port and self.kind != "Mesh":
            ident += f"_port_{self.port}"
        return f"{self.kind}_{ident}"


def mesh_sessions(cluster: Cluster, me: NodeInfo, restart: int | None, problems: list[str]) -> list[Session]:
    """The node-to-node mesh of this node: a session per other node and family, from this node's
    address of that family to the other node's, leaving out route reflectors and addresses that are
    this node's own (a second node claiming an address is reported and left out)."""
    sessions: list[Session] = []
    for family in (4, 6):
        mine = me.address(family)
        if mine is None:
            continue
        owners: dict[Address, str] = {mine: me.name}
        for name in sorted(cluster.nodes):
            node = cluster.nodes[name]
            addr = node.address(family)
            if name == me.name or addr is None or node.rr_cluster_id:
                continue
            if addr in owners:
                problems.append(f"{label('Node', name)}: its IPv{family} address {addr} is also node {owners[addr]}'s; left out of the mesh")
                continue
            owners[addr] = name
            sessions.append(Session("Mesh", addr, cluster.as_of(name), cluster.port_of(name), origin=label("Node", name), restart_time=restart))
    return sessions


@dataclass(frozen=True)
class PeerSpec:
    """One decoded BGPPeer, reduced to what the expansion needs."""

    name: str
    node: str = ""
    node_selector: Matcher | None = None
    peer_selector: Matcher | None = None
    peer_ip: Address | None = None
    peer_port: int = 0
    asn: int = 0
    use_node_ip: bool = True
    keep_next_hop: bool = False
    ttl_security: int = 0
    allow_local_as: int = 0
    reachable_by: Address | None = None
    restart_time: int | None = None
    filters: tuple[str, ...] = ()

    @property
    def is_global(self) -> bool:
        """A peer of every node (neither node nor nodeSelector set)."""
        return not self.node and self.node_selector is None

    @property
    def shown(self) -> str:
        """How problems and sessions name it."""
        return label("BGPPeer", self.name)

    def session(self, kind: str, ip: Address, asn: int, port: int, **remote: Any) -> Session:
        """A session of this peer to `ip`, with the options every session of the peer shares
        (Calico's setPeerConfigFieldsFromV3Resource and the TTL and filters it copies); `remote`
        holds what depends on the other end."""
        return Session(
            kind,
            ip,
            asn,
            port,
            origin=self.shown,
            use_node_ip=self.use_node_ip,
            ttl_security=self.ttl_security,
            restart_time=self.restart_time,
            filters=self.filters,
            **remote,
        )


def _selectors(spec: dict, shown: str, problems: list[str]) -> dict[str, Matcher] | None:
    """The peer's nodeSelector and peerSelector that are set, parsed; None (reported) when one
    does not parse."""
    matchers = {}
    for key in ("nodeSelector", "peerSelector"):
        if not spec.get(key):
            continue
        try:
            matchers[key] = parse(spec[key])
        except SelectorError as exc:
            problems.append(f"{shown}: spec.{key}: {exc}; this peer is not rendered")
            return None
    return matchers


def _remote_address(spec: dict, shown: str, problems: list[str]) -> tuple[Address | None, int] | None:
    """The peerIP as (address, port or 0), (None, 0) when not set; None (reported) when BGP cannot
    use the address. ValueError for a peerIP that is not an address: the decoder checked it, this
    is the second line of defence."""
    if not spec.get("peerIP"):
        return None, 0
    parsed = split_peer_ip(spec["peerIP"]) if isinstance(spec["peerIP"], str) else None
    if parsed is None:
        raise ValueError(f"spec.peerIP {spec['peerIP']!r} is not an address with an optional port")
    peer_ip = address(parsed[0])
    reason = unusable(peer_ip)
    if reason:
        problems.append(f"{shown}: spec.peerIP {peer_ip} is {reason}; this peer is not rendered")
        return None
    return peer_ip, parsed[1]


def _not_renderable(spec: dict, shown: str) -> str | None:
    """Why a decoded BGPPeer cannot be rendered at all, or None."""
    if spec.get("password"):
        return f"{shown}: spec.password.secretKeyRef needs the Kubernetes API (etcd mode has no secrets); this peer is not rendered"
    if spec.get("localWorkloadSelector"):
        return f"{shown}: spec.localWorkloadSelector (peering with workloads) is not supported; this peer is not rendered"
    if not spec.get("peerIP") and not spec.get("peerSelector"):
        return f"{shown}: neither spec.peerIP nor spec.peerSelector is set; this peer is not rendered"
    if spec.get("peerIP") and not spec.get("asNumber"):
        return f"{shown}: spec.peerIP needs spec.asNumber; this peer is not rendered"
    if spec.get("numAllowedLocalASNumbers", 0) < 0:
        return f"{shown}: spec.numAllowedLocalASNumbers {spec['numAllowedLocalASNumbers']} is negative; this peer is not rendered"
    return None


def read_peer(doc: Any, fallback: str, problems: list[str]) -> PeerSpec | None:
    """A BGPPeer document as the expansion needs it; None (reported) when it does not decode or
    asks for something that cannot be rendered."""
    name = name_of(doc, fallback)
    out = decoded("BGPPeer", doc, name, problems)
    if out is None:
        return None
    spec, shown = out["spec"], label("BGPPeer", name)
    reason = _not_renderable(spec, shown)
    if reason:
        problems.append(reason)
        return None
    matchers = _selectors(spec, shown, problems)
    remote = _remote_address(spec, shown, problems) if matchers is not None else None
    if matchers is None or remote is None:
        return None
    peer_ip, peer_port = remote
    return PeerSpec(
        name=name,
        node=spec.get("node", ""),
        node_selector=matchers.get("nodeSelector"),
        peer_selector=matchers.get("peerSelector"),
        peer_ip=peer_ip,
        peer_port=peer_port,
        asn=spec.get("asNumber", 0),
        use_node_ip=spec.get("sourceAddress", "UseNodeIP") == "UseNodeIP",
        keep_next_hop=bool(spec.get("keepOriginalNextHop")),
        ttl_security=spec.get("ttlSecurity", 0),
        allow_local_as=spec.get("numAllowedLocalASNumbers", 0),
        reachable_by=address(spec["reachableBy"]) if spec.get("reachableBy") else None,
        restart_time=restart_time(spec.get("maxRestartTime"), "spec.maxRestartTime", shown, problems),
        filters=tuple(spec.get("filters") or ()),
    )


def read_peers(docs: Sequence[Any], problems: list[str]) -> list[PeerSpec]:
    """The renderable BGPPeers, sorted by name (Calico walks them in map order; a fixed order makes
    the first-wins rules below give the same answer every time)."""
    peers = []
    for i, doc in enumerate(docs):
        try:
            peers.append(read_peer(doc, f"#{i}", problems))
        except ValueError as exc:  # the decoder let through a value this module will not render
            problems.append(f"{label('BGPPeer', name_of(doc, f'#{i}'))}: {exc}; this peer is not rendered")
    return sorted((p for p in peers if p is not None), key=lambda p: p.name)


def _node_sessions(cluster: Cluster, name: str, families: Iterable[int], peer: PeerSpec, kind: str) -> list[Session]:
    """Sessions to a Calico node taken as a peer (peerSelector, or a reverse peering): its
    addresses, its AS, its listen port, its route reflector cluster id."""
    node = cluster.nodes[name]
    addresses = [a for a in map(node.address, families) if a is not None]
    return [peer.session(kind, a, cluster.as_of(name), cluster.port_of(name), rr_cluster_id=node.rr_cluster_id) for a in addresses]


def _ip_session(cluster: Cluster, peer: PeerSpec, kind: str) -> Session:
    """The session a peerIP designates. With no port given, a Calico node at that address and AS
    is dialled on its listen port."""
    assert peer.peer_ip is not None
    port = peer.peer_port
    if not port:
        at = cluster.nodes_at(peer.peer_ip, peer.asn, 0)
        port = cluster.port_of(at[0]) if at else 0
    return peer.session(
        kind,
        peer.peer_ip,
        peer.asn,
        port,
        calico_node=cluster.has_address(peer.peer_ip),
        keep_next_hop=peer.keep_next_hop,
        allow_local_as=peer.allow_local_as,
        reachable_by=peer.reachable_by,
    )


def _remote_sessions(cluster: Cluster, peer: PeerSpec, kind: str) -> list[Session]:
    """The remote side of a BGPPeer: every node its peerSelector matches, or its peerIP."""
    if peer.peer_selector is not None:
        return [s for name in cluster.matching(peer.peer_selector) for s in _node_sessions(cluster, name, (4, 6), peer, kind)]
    return [_ip_session(cluster, peer, kind)]


def _local_nodes(cluster: Cluster, peer: PeerSpec) -> list[str]:
    """The nodes a per-node BGPPeer applies to (its node, or the nodes its nodeSelector matches)."""
    if peer.node_selector is not None:
        return cluster.matching(peer.node_selector)
    return [peer.node]


def _reverse(cluster: Cluster, peer: PeerSpec, me: str) -> list[Session]:
    """The peerings Calico adds back: when this node is on a BGPPeer's remote side (its
    peerSelector matches us, or its peerIP and AS are ours), this node peers with every node of
    the resource's local side. The forward reachableBy gateway does not apply backwards and is not
    carried over (Calico copies it, which would route our peer's address the wrong way)."""
    if peer.peer_selector is not None:
        remote, families = cluster.matching(peer.peer_selector), (4, 6)
    else:
        assert peer.peer_ip is not None
        remote, families = cluster.nodes_at(peer.peer_ip, peer.asn, peer.peer_port), (peer.peer_ip.version,)
    if me not in remote:
        return []
    local = cluster.matching(lambda _: True) if peer.is_global else [n for n in _local_nodes(cluster, peer) if n in cluster.nodes]
    return [s for name in local for s in _node_sessions(cluster, name, families, peer, "Node")]


def expand(cluster: Cluster, me: str, peers: Sequence[PeerSpec]) -> list[Session]:
    """This node's Global and Node sessions, in Calico's order and with its first-wins rules:
    global peers first, then the per-node peers of this node (skipped when a global peer has the
    same address and port), then the reverse peerings (skipped when any peering to that address
    and port exists already)."""
    chosen: dict[tuple[str, Address, int], Session] = {}

    def emit(session: Session) -> None:
        if session.kind == "Node" and ("Global", session.ip, session.port) in chosen:
            return
        chosen.setdefault((session.kind, session.ip, session.port), session)

    for peer in peers:
        if peer.is_global:
            for session in _remote_sessions(cluster, peer, "Global"):
                emit(session)
    for peer in peers:
        if not peer.is_global and me in _local_nodes(cluster, peer):
            for session in _remote_sessions(cluster, peer, "Node"):
                emit(session)
    for peer in peers:
        for session in _reverse(cluster, peer, me):
            emit(session)
    return list(chosen.values())
