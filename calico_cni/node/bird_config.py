"""This node's BIRD 2 configuration, rendered from the datastore as Calico v3.30's confd renders
bird.cfg, bird6.cfg, bird_aggr.cfg and bird_ipam.cfg for BIRD 1, in one daemon with an ipv4 and an
ipv6 channel. Who the sessions are with is `bgp_peers`' work; this module turns the cluster's
settings, pools, blocks and sessions into text.

Where BIRD 2 differs from Calico's BIRD 1 fork:
- No `krt_tunnel`: routes inside a pool whose ipipMode or vxlanMode is not Never are kept out of the
  kernel (listed in `Rendered.unrouted_pools`); calico-node's encapsulation part programs them
  (`node.encapsulation`), as Felix programs VXLAN routes (Calico's BIRD sends IPIP through tunl0).
- No `listen bgp`: listenPort is `local port` and bindMode NodeIP is `strict bind` on every session.
- The kernel protocol does not export interface (direct) routes back to the kernel: BIRD 2 would add
  a metric-32 duplicate of every connected route (BIRD 1 failed on them with "File exists").
- Functions and filters exist once per family (`_v4`, `_v6`), each holding that family's prefixes.

Secrets (a BGPPeer's password, nodeMeshPassword) need the Kubernetes API. As the issue asks, a peer
with a password is not rendered, and neither is the mesh when nodeMeshPassword is set (rendering it
without the password would quietly drop the authentication the operator asked for; Calico in etcd
mode, which has no secret watcher, renders both without a password).

Equal inputs give byte-equal text: everything is sorted. Pure: standard library and
`calico_cni.model` (through `bgp_peers`) only.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from calico_cni.model.kinds.routing import bgp_filter_interface, community_value
from calico_cni.node import bgp_peers
from calico_cni.node.bgp_peers import Address, Cluster, Network, NodeInfo, Session, decoded, label

EXCLUDE_SERVICES_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
FAMILIES = (4, 6)


def interface_glob(text: Any) -> str:
    """An interface name or glob that goes between BIRD's double quotes (the BGPFilter rule's
    check, '*' alone included); ValueError otherwise."""
    if not isinstance(text, str) or bgp_filter_interface(text):
        raise ValueError(f"interface {text!r} is not a name or glob of at most 15 letters, digits, '_', '.', '-' or '*'")
    return text


@dataclass(frozen=True)
class RoutingInputs:
    """Everything this node's BIRD configuration is rendered from (documents as stored)."""

    node: str  # this node's name
    nodes: Mapping[str, dict]  # name -> Node document (Calico v3 JSON)
    bgp_configurations: Mapping[str, dict]  # name -> BGPConfiguration ("default", "node.<name>")
    peers: Sequence[dict]  # BGPPeer documents
    filters: Mapping[str, dict]  # name -> BGPFilter document
    pools: Sequence[dict]  # IPPool documents
    blocks: Sequence[str]  # CIDRs of this node's confirmed block affinities (v4 and v6)
    router_id: str | None = None  # CALICO_ROUTER_ID as given: None, "hash", or an IPv4 address


@dataclass(frozen=True)
class Rendered:
    """A rendered configuration and what could not be rendered."""

    text: str  # the whole BIRD 2 configuration
    problems: tuple[str, ...]  # each names the resource it is about
    unrouted_pools: tuple[str, ...]  # CIDRs of pools with ipipMode/vxlanMode not Never (kept out of the kernel)


# --- what the inputs mean -----------------------------------------------------------------------

Advertisement = tuple[Network, tuple[tuple[int, ...], ...]]  # a prefix and its communities


@dataclass(frozen=True)
class Settings:
    """The BGPConfiguration resources as this node reads them (`default`, then `node.<name>`)."""

    global_as: int = bgp_peers.DEFAULT_AS
    mesh: bool = True
    mesh_restart: int | None = None
    mesh_password: bool = False
    global_port: int = 0
    node_ports: Mapping[str, int] = field(default_factory=dict)
    bind_node_ip: bool = False
    log_level: str = "info"  # "debug", "info" or "none"
    ignored_interfaces: tuple[str, ...] = ()
    cluster_ips: tuple[Network, ...] = ()
    external_ips: tuple[Network, ...] = ()
    lb_ips: tuple[Network, ...] = ()
    advertisements: tuple[Advertisement, ...] = ()


@dataclass(frozen=True)
class Pool:
    """An IP pool as the export and kernel filters see it."""

    cidr: Network
    encapsulated: bool  # ipipMode or vxlanMode is not Never
    exported: bool  # not disableBGPExport


def _networks(blocks: Iterable[dict] | None) -> tuple[Network, ...]:
    return tuple(bgp_peers.network(b["cidr"]) for b in blocks or () if b.get("cidr"))


def _not_single(nets: Iterable[Network]) -> tuple[Network, ...]:
    """Calico advertises single external or load-balancer addresses per Service (not here)."""
    return tuple(n for n in nets if n.prefixlen != n.max_prefixlen)


def _communities(values: Iterable[str], defined: Mapping[str, str]) -> tuple[tuple[int, ...], ...]:
    """A prefix advertisement's communities: values as given, names through `communities`."""
    found = set()
    for value in values:
        text = value if community_value(value) is None else defined.get(value)
        if text is not None and community_value(text) is None:
            found.add(tuple(int(part) for part in text.split(":")))
    return tuple(sorted(found))


def _advertisements(spec: dict) -> tuple[Advertisement, ...]:
    defined = {c["name"]: c["value"] for c in spec.get("communities") or ()}
    out = [(bgp_peers.network(a["cidr"]), _communities(a["communities"], defined)) for a in spec.get("prefixAdvertisements") or ()]
    return tuple(a for a in out if a[1])


@dataclass(frozen=True)
class _Config:
    """One decoded BGPConfiguration with its networks parsed."""

    spec: dict
    cluster_ips: tuple[Network, ...] = ()
    external_ips: tuple[Network, ...] = ()
    lb_ips: tuple[Network, ...] = ()
    advertisements: tuple[Advertisement, ...] | None = None  # None: prefixAdvertisements not set
    ignored_interfaces: tuple[str, ...] = ()


def _read_config(name: str, doc: Any, problems: list[str]) -> _Config | None:
    out = decoded("BGPConfiguration", doc, name, problems)
    if out is None:
        return None
    spec = out["spec"]
    try:
        return _Config(
            spec,
            _networks(spec.get("serviceClusterIPs")),
            _networks(spec.get("serviceExternalIPs")),
            _networks(spec.get("serviceLoadBalancerIPs")),
            _advertisements(spec) if "prefixAdvertisements" in spec else None,
            tuple(interface_glob(i) for i in spec.get("ignoredInterfaces") or ()),
        )
    except ValueError as exc:
        problems.append(f"{label('BGPConfiguration', name)}: {exc}; left out of the BIRD configuration")
        return None


def _log_level(text: str) -> str:
    level = text.lower()
    return level if level in ("debug", "info") else "none"


def read_settings(configs: Mapping[str, dict], me: str, problems: list[str]) -> Settings:
    """Calico's reading of the BGPConfigurations: the cluster's from `default`, and from this
    node's `node.<name>` its log level, listen port and prefix advertisements; every node's listen
    port (peers dial it). A resource that does not decode counts as absent (reported), and one of
    another name is ignored (reported, where Calico logs a warning)."""
    for name in sorted(configs):
        if name != "default" and not name.startswith("node."):
            problems.append(f"{label('BGPConfiguration', name)}: only 'default' and 'node.<node name>' are read; this one is ignored")
    read = {name: _read_config(name, configs[name], problems) for name in sorted(configs) if name == "default" or name.startswith("node.")}
    found = {name: config for name, config in read.items() if config is not None}
    default, mine = found.get("default") or _Config({}), found.get(f"node.{me}") or _Config({})
    ports = {n[len("node.") :]: c.spec["listenPort"] for n, c in found.items() if n.startswith("node.") and c.spec.get("listenPort")}
    spec = default.spec
    return Settings(
        global_as=spec.get("asNumber") or bgp_peers.DEFAULT_AS,
        mesh=spec.get("nodeToNodeMeshEnabled", True),
        mesh_restart=bgp_peers.restart_time(spec.get("nodeMeshMaxRestartTime"), "spec.nodeMeshMaxRestartTime", label("BGPConfiguration", "default"), problems),
        mesh_password=bool(spec.get("nodeMeshPassword")),
        global_port=spec.get("listenPort", 0),
        node_ports=ports,
        bind_node_ip=spec.get("bindMode") == "NodeIP",
        log_level=_log_level(mine.spec.get("logSeverityScreen") or spec.get("logSeverityScreen") or "Info"),
        ignored_interfaces=default.ignored_interfaces,
        cluster_ips=default.cluster_ips,
        external_ips=default.external_ips,
        lb_ips=default.lb_ips,
        advertisements=mine.advertisements if mine.advertisements is not None else default.advertisements or (),
    )


def read_pools(docs: Sequence[Any], problems: list[str]) -> list[Pool]:
    """The IP pools, sorted by family and CIDR."""
    pools = []
    for i, doc in enumerate(docs):
        name = bgp_peers.name_of(doc, f"#{i}")
        out = decoded("IPPool", doc, name, problems)
        if out is None:
            continue
        spec = out["spec"]
        try:
            cidr = bgp_peers.network(spec["cidr"])
        except ValueError as exc:
            problems.append(f"{label('IPPool', name)}: {exc}; left out of the BIRD configuration")
            continue
        encapsulated = spec["ipipMode"] != "Never" or spec["vxlanMode"] != "Never"
        pools.append(Pool(cidr, encapsulated, not spec.get("disableBGPExport")))
    return sorted(pools, key=lambda p: _net_key(p.cidr))


def read_blocks(texts: Sequence[Any], problems: list[str]) -> list[Network]:
    """This node's confirmed blocks, parsed strictly, without repeats, sorted."""
    blocks = set()
    for text in texts:
        try:
            blocks.add(bgp_peers.network(text))
        except ValueError:
            problems.append(f"block affinity {text!r}: not a network; not advertised")
    return sorted(blocks, key=_net_key)


def _net_key(net: Network) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def hash_router_id(nodename: str) -> str:
    """CALICO_ROUTER_ID=hash: the first four bytes of SHA-256(nodename), the first lowered by 32
    when above 223 (out of the multicast and reserved ranges). A name read from the environment
    with surrogate escapes (invalid UTF-8) is hashed as its bytes, as Go hashes it."""
    first, *rest = hashlib.sha256(nodename.encode("utf-8", "surrogateescape")).digest()[:4]
    return ".".join(str(b) for b in (first - 32 if first > 223 else first, *rest))


def router_id(given: str | None, me: NodeInfo | None, nodename: str, problems: list[str]) -> str | None:
    """BIRD's router id: CALICO_ROUTER_ID (hash or an IPv4 address), else the node's IPv4
    address; None (reported) when there is none."""
    if given == "hash":
        return hash_router_id(nodename)
    if given:
        try:
            rid = ipaddress.IPv4Address(given)
        except ValueError:
            rid = None
        if rid is None or rid.is_unspecified:
            problems.append(f"CALICO_ROUTER_ID {given!r}: not 'hash' or an IPv4 address; no BGP session is rendered")
            return None
        return str(rid)
    if me is None:  # already reported: no BGP without the node
        return None
    if me.ipv4 is not None:
        return str(me.ipv4)
    problems.append(f"{label('Node', nodename)}: no IPv4 address and no CALICO_ROUTER_ID, so BIRD has no router id; no BGP session is rendered (set CALICO_ROUTER_ID=hash)")
    return None


# --- BGPFilter functions ------------------------------------------------------------------------

_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}
_MAX_SYMBOL = 64  # BIRD's longest symbol


def filter_function(name: str, direction: str, family: int) -> str:
    """The BIRD function of a BGPFilter's rules (Calico's naming: a long name is cut and given a
    hash so the symbol fits BIRD's 64 characters)."""
    room = _MAX_SYMBOL - len(f"bgp__{direction}FilterV{family}")
    if len(name) > room:
        name = name[: room - 17] + "_" + hashlib.sha256(name.encode()).hexdigest().upper()[:16]
    return f"'bgp_{name}_{direction}FilterV{family}'"


def _cidr_match(rule: dict) -> str:
    net = bgp_peers.network(rule["cidr"])
    pattern = str(net)
    if "prefixLength" in rule:
        low = max(net.prefixlen, rule["prefixLength"].get("min", 0))
        high = min(net.max_prefixlen, rule["prefixLength"].get("max", net.max_prefixlen))
        if low > high:
            raise ValueError(f"prefixLength selects nothing in {net} (/{low} to /{high})")
        if rule["matchOperator"] in ("Equal", "NotEqual"):
            raise ValueError("prefixLength needs matchOperator In or NotIn (BIRD compares a prefix with a set only by ~)")
        pattern = f"[ {net}{{{low},{high}}} ]"
    return f"(net {_OPERATORS[rule['matchOperator']]} {pattern})"


def filter_statement(rule: dict) -> str:
    """One decoded BGPFilter rule as a BIRD statement (ValueError when BIRD could not run it)."""
    conditions = []
    if "cidr" in rule:
        conditions.append(_cidr_match(rule))
    if rule.get("source") == "RemotePeers":
        conditions.append("((defined(source))&&(source ~ [ RTS_BGP ]))")
    if "interface" in rule:
        conditions.append(f'((defined(ifname))&&(ifname ~ "{interface_glob(rule["interface"])}"))')
    action = f"{rule['action'].lower()};"
    return f"if ({'&&'.join(conditions)}) then {{ {action} }}" if conditions else action


FilterRules = dict[tuple[str, int], list[str]]  # (direction, family) -> BIRD statements


def read_filters(docs: Mapping[str, dict], problems: list[str]) -> dict[str, FilterRules | None]:
    """BGPFilter name -> (direction, family) -> its BIRD statements (only lists that have rules), or
    None for a filter left out (reported). The name becomes a BIRD symbol, so it must be the decoded
    document's own (checked) name."""
    out: dict[str, FilterRules | None] = {}
    for name in sorted(docs):
        out[name] = None
        doc = decoded("BGPFilter", docs[name], name, problems)
        if doc is None:
            continue
        if doc["metadata"]["name"] != name:
            problems.append(f"{label('BGPFilter', name)}: stored under another name than its metadata.name; left out of the BIRD configuration")
            continue
        try:
            out[name] = {
                (direction, family): [filter_statement(rule) for rule in doc["spec"][f"{direction}V{family}"]]
                for direction in ("import", "export")
                for family in FAMILIES
                if doc["spec"].get(f"{direction}V{family}")
            }
        except ValueError as exc:
            problems.append(f"{label('BGPFilter', name)}: {exc}; left out of the BIRD configuration")
    return out


def filter_functions(filters: Mapping[str, FilterRules | None]) -> list[str]:
    """A BIRD function per BGPFilter, direction and family that has rules (the peers call them)."""
    lines = []
    for name in sorted(filters):
        for (direction, family), statements in sorted((filters[name] or {}).items()):
            lines += [f"function {filter_function(name, direction, family)}() {{", *(f"  {s}" for s in statements), "}"]
    return lines


# --- per-family functions and filters -----------------------------------------------------------


def _if_net(net: Network, action: str, op: str = "~") -> str:
    return f"  if ( net {op} {net} ) then {{ {action}; }}"


def of_family(nets: Iterable[Network], family: int) -> list[Network]:
    """The networks of one family (4 or 6)."""
    return [n for n in nets if n.version == family]


@dataclass(frozen=True)
class Routes:
    """What this node originates and where routes may go."""

    settings: Settings
    pools: Sequence[Pool]
    blocks: Sequence[Network]
    services_here: bool  # this node advertises the Service ranges (not excluded by its label)
    is_reflector: bool

    def services(self) -> list[Network]:
        """Service ranges exported as blackholes and kept out of the kernel."""
        s = self.settings
        return [*s.cluster_ips, *_not_single(s.external_ips), *_not_single(s.lb_ips)]


def communities_function(routes: Routes, family: int) -> list[str]:
    """The communities each prefix advertisement adds to the routes it covers."""
    lines = [f"function apply_communities_v{family}() {{"]
    for net, communities in routes.settings.advertisements:
        if net.version != family:
            continue
        lines.append(f"  if ( net ~ {net} ) then {{")
        for parts in communities:
            attr = "bgp_community" if len(parts) == 2 else "bgp_large_community"
            lines.append(f"    {attr}.add(({', '.join(map(str, parts))}));")
        lines.append("  }")
    return [*lines, "}"]


def aggregation_function(routes: Routes, family: int) -> list[str]:
    """Each own block is exported as the aggregate only, nothing beneath it."""
    lines = [f"function calico_aggr_v{family}() {{"]
    for block in of_family(routes.blocks, family):
        lines += [_if_net(block, "accept", "="), _if_net(block, "reject")]
    return [*lines, "}"]


def export_function(routes: Routes, family: int) -> list[str]:
    """What may be exported to a BGP peer; the caller rejects the rest, so nothing outside a pool
    (or a Service range) leaves the node."""
    lines = [f"function calico_export_to_bgp_peers_v{family}(bool internal_peer) {{"]
    lines += [_if_net(p.cidr, "reject") for p in routes.pools if p.cidr.version == family and not p.exported]
    lines += [
        "  if internal_peer then {",
        '    if ((ifname ~ "*.cali") || (ifname ~ "*.calico")) then { reject; }',
        "  }",
        '  if ( ifname ~ "bpf*.cali" ) then { reject; }',
        f"  apply_communities_v{family}();",
        f"  calico_aggr_v{family}();",
    ]
    if routes.services_here:
        lines += [_if_net(n, "accept") for n in of_family(routes.services(), family)]
    if routes.is_reflector:
        lines += [_if_net(n, "accept") for n in of_family(routes.settings.lb_ips, family)]
    lines += [_if_net(p.cidr, "accept") for p in routes.pools if p.cidr.version == family and p.exported]
    return [*lines, "}"]


def kernel_filter(routes: Routes, family: int) -> list[str]:
    """What BIRD may program into the kernel."""
    lines = [
        f"filter calico_kernel_programming_v{family} {{",
        "  # Interface routes are the kernel's own already.",
        "  if ( source = RTS_DEVICE ) then { reject; }",
    ]
    lines += [_if_net(n, "reject") for n in of_family(routes.services(), family)]
    unrouted = [p.cidr for p in routes.pools if p.cidr.version == family and p.encapsulated]
    if unrouted:
        lines.append("  # IPIP and VXLAN pools: BIRD 2 cannot program their tunnel routes.")
        lines += [_if_net(n, "reject") for n in unrouted]
    return [*lines, "  accept;", "}"]


def family_functions(routes: Routes) -> list[str]:
    """The communities, aggregation and export functions and the kernel filter of each family."""
    lines: list[str] = []
    for family in FAMILIES:
        for part in (communities_function, aggregation_function, export_function, kernel_filter):
            lines += [*part(routes, family), ""]
    return lines


# --- protocols ----------------------------------------------------------------------------------


def base_protocols(settings: Settings) -> list[str]:
    """Device, direct and kernel protocols."""
    interfaces = ", ".join([*(f'-"{i}"' for i in settings.ignored_interfaces), '-"cali*"', '-"kube-ipvs*"', '"*"'])
    lines = ["protocol device {", "  scan time 2;", "}", "", "protocol direct {", "  ipv4;", "  ipv6;", f"  interface {interfaces};", "}", ""]
    for family in FAMILIES:
        lines += [
            f"protocol kernel kernel{family} {{",
            "  learn;",
            "  persist;",
            "  scan time 2;",
            "  graceful restart;",
            "  merge paths on;",
            f"  ipv{family} {{",
            "    import all;",
            f"    export filter calico_kernel_programming_v{family};",
            "  };",
            "}",
            "",
        ]
    return lines


def static_protocols(routes: Routes, gateways: Sequence[tuple[Address, Address]]) -> list[str]:
    """Blackholes for own blocks (not /32 or /128 ones) and Service ranges, and the routes to
    peers that are reachable by a gateway (first route of a prefix wins)."""
    lines = []
    for family in FAMILIES:
        routes_of: dict[Network, str] = {}
        for block in of_family(routes.blocks, family):
            if block.prefixlen != block.max_prefixlen:
                routes_of.setdefault(block, "blackhole")
        if routes.services_here:
            for net in of_family(routes.services(), family):
                routes_of.setdefault(net, "blackhole")
        for peer, gateway in gateways:
            if peer.version == family:
                routes_of.setdefault(ipaddress.ip_network(peer), f"via {gateway}")
        lines += [f"protocol static static{family} {{", f"  ipv{family};"]
        lines += [f"  route {net} {how};" for net, how in sorted(routes_of.items(), key=lambda r: _net_key(r[0]))]
        lines += ["}", ""]
    return lines


def template(asn: int, port: int) -> list[str]:
    """The settings every session shares (Calico's bgp_template)."""
    local = f"local port {port} as {asn};" if port else f"local as {asn};"
    return [
        "template bgp bgp_template {",
        '  description "Connection to BGP peer";',
        f"  {local}",
        "  graceful restart on;",
        "  connect delay time 2;",
        "  connect retry time 5;",
        "  error wait time 5,30;",
        "}",
        "",
    ]


@dataclass(frozen=True)
class Local:
    """This node's side of its sessions."""

    node: NodeInfo
    asn: int
    bind_node_ip: bool
    filters: Mapping[str, FilterRules | None]  # None: left out (its sessions were not rendered)


def _filter_calls(session: Session, local: Local, direction: str, problems: list[str]) -> list[str]:
    calls = []
    for name in session.filters:
        if name not in local.filters:
            # Calico renders the peer without a filter that does not exist.
            problems.append(f"{session.origin}: BGPFilter {name!r} does not exist; the peer is rendered without it")
        elif (direction, session.family) in (local.filters[name] or {}):
            calls.append(f"{filter_function(name, direction, session.family)}();")
    return calls


def _filters_left_out(session: Session, filters: Mapping[str, FilterRules | None], problems: list[str]) -> bool:
    """Whether a filter of the session exists but was left out (reported): the session is then not
    rendered, since without the filter it would pass what the operator filtered out (Calico renders
    the filter, BIRD refuses the whole configuration and keeps running the one before)."""
    left_out = [name for name in session.filters if name in filters and filters[name] is None]
    for name in left_out:
        problems.append(f"{session.origin}: BGPFilter {name!r} was left out of the BIRD configuration; this peer is not rendered")
    return bool(left_out)


def _channel(session: Session, local: Local, problems: list[str]) -> list[str]:
    family = session.family
    lines = [f"  ipv{family} {{", "    gateway recursive;", "    add paths on;"]
    if session.kind == "Mesh":
        return [*lines, "    import all;", f"    export filter {{ calico_export_to_bgp_peers_v{family}(true); reject; }};", "  };"]
    if session.keep_next_hop and session.asn != local.asn:
        lines.append("    next hop keep;")
    imports = " ".join([*_filter_calls(session, local, "import", problems), "accept;"])
    same_as = "true" if session.asn == local.asn else "false"
    exports = " ".join([*_filter_calls(session, local, "export", problems), f"calico_export_to_bgp_peers_v{family}({same_as});", "reject;"])
    return [*lines, f"    import filter {{ {imports} }};", f"    export filter {{ {exports} }};", "  };"]


def _source(session: Session, local: Local, mine: Address, problems: list[str]) -> list[str]:
    if not (session.use_node_ip or local.bind_node_ip):
        return []
    lines = [f"  source address {mine};"]
    if local.bind_node_ip:
        if not session.use_node_ip:
            problems.append(f"{session.origin}: sourceAddress None cannot hold with bindMode NodeIP (BIRD 2 binds a session to its source address); the node's address is used")
        lines.append("  strict bind on;")
    return lines


def _options(session: Session, local: Local, mine: Address) -> list[str]:
    """Passive, restart time, route reflection and local AS (a mesh session has the first two only:
    this node is no reflector when it renders a mesh, and a mesh allows no local AS)."""
    lines = []
    if session.higher_address_connects and str(session.ip) > str(mine):
        lines.append("  passive on;")
    if session.restart_time is not None:
        lines.append(f"  graceful restart time {session.restart_time};")
    reflector = local.node.rr_cluster_id
    if reflector and session.asn == local.asn and session.rr_cluster_id != reflector:
        lines += ["  rr client;", f"  rr cluster id {reflector};"]
    if session.allow_local_as > 0:
        lines.append(f"  allow local as {session.allow_local_as};")
    return lines


def session_block(session: Session, local: Local, problems: list[str]) -> list[str]:
    """The protocol block of one session (the caller checked this node has an address of its
    family and that it is not this node's own)."""
    mine = local.node.address(session.family)
    assert mine is not None
    port = f"port {session.port} " if session.port else ""
    lines = [f"protocol bgp {session.name} from bgp_template {{"]
    if session.kind != "Mesh":
        lines += ["  ttl security on;", f"  multihop {session.ttl_security};"] if session.ttl_security else ["  ttl security off;", "  multihop;"]
    lines.append(f"  neighbor {session.ip} {port}as {session.asn};")
    lines += _source(session, local, mine, problems)
    lines += _options(session, local, mine)
    return [*lines, *_channel(session, local, problems), "}", ""]


# --- the whole configuration --------------------------------------------------------------------


def _sessions(inputs: RoutingInputs, cluster: Cluster, me: NodeInfo, settings: Settings, filters: Mapping[str, FilterRules | None], problems: list[str]) -> list[Session]:
    """Every session this node renders: the mesh, then the peers; none to this node's own
    addresses or in a family it has no address of, and none whose BGPFilter was left out."""
    sessions: list[Session] = []
    if settings.mesh and not me.rr_cluster_id:
        if settings.mesh_password:
            problems.append(
                f"{label('BGPConfiguration', 'default')}: spec.nodeMeshPassword needs the Kubernetes API (etcd mode has no secrets); the node-to-node mesh is not rendered"
            )
        else:
            sessions += bgp_peers.mesh_sessions(cluster, me, settings.mesh_restart, problems)
    sessions += bgp_peers.expand(cluster, me.name, bgp_peers.read_peers(inputs.peers, problems))
    usable = [s for s in sessions if me.address(s.family) not in (None, s.ip) and not _filters_left_out(s, filters, problems)]
    return sorted(usable, key=lambda s: ("MGN".index(s.kind[0]), s.family, int(s.ip), s.port))


def _gateways(sessions: Iterable[Session], problems: list[str]) -> list[tuple[Address, Address]]:
    out = []
    for s in sessions:
        if s.reachable_by is None:
            continue
        reason = bgp_peers.unusable(s.reachable_by)
        if s.reachable_by.version != s.family or reason:
            problems.append(f"{s.origin}: spec.reachableBy {s.reachable_by} is {reason or 'not of the peer address family'}; no route to the peer is rendered")
            continue
        out.append((s.ip, s.reachable_by))
    return out


def _head(rid: str | None, settings: Settings) -> list[str]:
    lines = ["# Rendered by calico-node from the datastore; changes here are overwritten.", ""]
    if rid is not None:
        lines.append(f"router id {rid};")
    debug = {"debug": ["debug protocols all;"], "info": ["debug protocols { states };"]}.get(settings.log_level, [])
    return [*lines, *debug, ""]


def read_nodes(docs: Mapping[str, dict], me: str, problems: list[str]) -> tuple[dict[str, NodeInfo], NodeInfo | None]:
    """Every node that decodes, and this node (None, reported, when it is missing or unreadable)."""
    nodes = {}
    for name in sorted(docs):
        info = bgp_peers.read_node(name, docs[name], problems)
        if info is not None:
            nodes[name] = info
    if me not in nodes:
        why = "could not be read" if me in docs else "is not in the datastore"
        problems.append(f"{label('Node', me)}: this node {why}; no BGP session is rendered")
    return nodes, nodes.get(me)


MAX_PROBLEM = 1000  # characters of one problem kept (a stored value may be any size)


def loggable(problem: str) -> str:
    """A problem as one printable line of bounded length: problems quote stored names and values,
    which may hold a newline (a forged log line) or an escape sequence, or be megabytes long."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in problem)
    if len(text) > MAX_PROBLEM:
        text = f"{text[:MAX_PROBLEM]}... ({len(text) - MAX_PROBLEM} more characters)"
    return text


def render(inputs: RoutingInputs) -> Rendered:
    """This node's BIRD 2 configuration; what could not be rendered is named in `problems`."""
    problems: list[str] = []
    settings = read_settings(inputs.bgp_configurations, inputs.node, problems)
    nodes, me = read_nodes(inputs.nodes, inputs.node, problems)
    cluster = Cluster(nodes, settings.global_as, settings.global_port, settings.node_ports)
    pools = read_pools(inputs.pools, problems)
    routes = Routes(
        settings,
        pools,
        read_blocks(inputs.blocks, problems),
        services_here=me is None or me.labels.get(EXCLUDE_SERVICES_LABEL) != "true",
        is_reflector=bool(me and me.rr_cluster_id),
    )
    filters = read_filters(inputs.filters, problems)
    rid = router_id(inputs.router_id, me, inputs.node, problems)
    bgp_on = me is not None and rid is not None
    sessions = _sessions(inputs, cluster, me, settings, filters, problems) if bgp_on else []
    lines = [*_head(rid, settings), *family_functions(routes), *filter_functions(filters), ""]
    lines += [*base_protocols(settings), *static_protocols(routes, _gateways(sessions, problems))]
    if bgp_on:
        local = Local(me, cluster.as_of(me.name), settings.bind_node_ip, filters)
        lines += template(local.asn, cluster.port_of(me.name))
        for session in sessions:
            lines += session_block(session, local, problems)
    unrouted = tuple(str(p.cidr) for p in pools if p.encapsulated)
    return Rendered("\n".join(lines).rstrip("\n") + "\n", tuple(dict.fromkeys(map(loggable, problems))), unrouted)
