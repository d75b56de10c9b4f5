"""One workload's dataplane, end to end: set up (with rollback), tear down, verify.

Calico's layout: a veth pair with the host end `cali...` (MAC ee:ee:ee:ee:ee:ee, proxy ARP, no
address) and the container end `CNI_IFNAME` holding the /32 and /128 addresses; the container
routes via 169.254.1.1 (IPv4) and the host end's link-local (IPv6); the node routes each address to
the host end.
"""

from __future__ import annotations

import _thread
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from calico_cni import logs, timing
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane import routing, sysctl, veth
from calico_cni.dataplane.netns import Netns
from calico_cni.dataplane.rtnl import IPInterface, IPNetwork, Link, NetlinkError, Rtnl

log = logging.getLogger(__name__)


@dataclass
class WorkloadSpec:
    """What one workload's dataplane should look like."""

    host_name: str
    ifname: str
    alias: str
    mtu: int  # 0: not known (CHECK without an MTU in prevResult)
    addresses: list[IPInterface]
    routes: list[IPNetwork] = field(default_factory=list)
    allow_ip_forwarding: bool = False

    def versions(self) -> set[int]:
        """The IP versions of the workload's addresses."""
        return {a.version for a in self.addresses}


@dataclass
class Created:
    """What `setup` has created so far (what `rollback` removes)."""

    host_name: str = ""
    host_index: int = 0
    ifname: str = ""


@dataclass
class Wired:
    """The result of `setup`: both links as read right after their creation (their MACs do not
    change afterwards)."""

    host: Link
    container: Link


def host_sysctls(name: str, versions: set[int]) -> list[tuple[str, int]]:
    """The settings of the host veth `name`: proxy ARP/NDP and forwarding so it answers for the
    container's gateway, no router advertisements or duplicate address detection."""
    out: list[tuple[str, int]] = []
    if 4 in versions:
        out += [
            (f"net/ipv4/conf/{name}/proxy_arp", 1),
            (f"net/ipv4/neigh/{name}/proxy_delay", 0),
            (f"net/ipv4/conf/{name}/forwarding", 1),
            (f"net/ipv4/conf/{name}/route_localnet", 1),
        ]
    if 6 in versions:
        out += [
            (f"net/ipv6/conf/{name}/disable_ipv6", 0),
            (f"net/ipv6/conf/{name}/accept_ra", 0),
            (f"net/ipv6/conf/{name}/accept_dad", 0),
            (f"net/ipv6/conf/{name}/proxy_ndp", 1),
            (f"net/ipv6/conf/{name}/forwarding", 1),
        ]
    return out


def container_sysctls(ifname: str, versions: set[int], forwarding: bool) -> list[tuple[str, int]]:
    """The settings inside the container: IPv6 enabled (no duplicate address detection on
    `ifname`) when it has IPv6 addresses, and IP forwarding when the network allows it."""
    out: list[tuple[str, int]] = []
    if 6 in versions:
        out += [(f"net/ipv6/conf/{dev}/disable_ipv6", 0) for dev in ("all", "default", "lo", ifname)]
        out.append((f"net/ipv6/conf/{ifname}/accept_dad", 0))
    if forwarding:
        if 4 in versions:
            out.append(("net/ipv4/ip_forward", 1))
        if 6 in versions:
            out.append(("net/ipv6/conf/all/forwarding", 1))
    return out


def setup(host: Netns, container: Netns, spec: WorkloadSpec, created: Created) -> Wired:
    """Create and configure the workload's veth pair, addresses and routes.

    Records what it creates in `created`; on failure the caller passes that to `rollback`.
    """
    try:
        return _setup(host, container, spec, created)
    except NetlinkError as exc:
        raise DataplaneError(f"setting up {spec.ifname}/{spec.host_name} failed", str(exc)) from None


def _setup(host: Netns, container: Netns, spec: WorkloadSpec, created: Created) -> Wired:
    versions = spec.versions()
    veth.claim_host_name(host, spec.host_name, lambda alias: alias == spec.alias)
    veth.create_pair(host, container, spec.host_name, spec.ifname, spec.mtu)
    created.host_name, created.ifname = spec.host_name, spec.ifname
    host_link, cont_link = veth.read_pair(host, container, spec.host_name, spec.ifname)
    created.host_index = host_link.index

    hr, cr = host.rtnl(), container.rtnl()
    hr.set_link(host_link.index, alias=spec.alias)
    host.run(sysctl.write_all, host_sysctls(spec.host_name, versions))
    hr.set_link(host_link.index, up=True)

    settings = container_sysctls(spec.ifname, versions, spec.allow_ip_forwarding)
    if settings:
        container.run(sysctl.write_all, settings)
    cr.set_link(cont_link.index, up=True)
    v4 = [a for a in spec.addresses if a.version == 4]
    v6 = [a for a in spec.addresses if a.version == 6]
    if v4:
        routing.configure_container_v4(cr, cont_link, v4, spec.routes)
    routing.add_host_routes(hr, host_link, spec.addresses)
    gateway = None
    if v6:
        gateway = routing.host_link_local(host, host_link)
        routing.configure_container_v6(cr, cont_link, v6, spec.routes, gateway)
    return Wired(host_link, cont_link)


def rollback(host: Netns, container: Netns | None, created: Created) -> None:
    """Remove what a failed `setup` created (the host routes go with the link). Never raises."""
    try:
        if created.host_index:
            link = host.rtnl().link(index=created.host_index)
            if link is not None and link.name == created.host_name:
                host.rtnl().delete_link(link.index)
                log.info("rolled back: deleted veth pair %s/%s", created.host_name, created.ifname)
            return  # already gone: its container end went with it
        if created.ifname and container is not None and veth.delete_created_end(container, created.ifname):
            log.info("rolled back: deleted %s in %s", created.ifname, container.path)
    except Exception:  # noqa: BLE001 - the original error is what the runtime must see
        log.exception("rollback of %s/%s failed", created.host_name, created.ifname)


def teardown(host: Netns, container: Netns | None, ifname: str, host_names: Sequence[str], owned: Callable[[str], bool]) -> list[str]:
    """Delete the workload's veth pair: any of `host_names` whose alias `owned` accepts (its
    container end goes with it), then `ifname` in the container (if its namespace still exists)
    when it is paired with one of them. Returns what was deleted."""
    removed = []
    names = list(dict.fromkeys(n for n in host_names if n))
    try:
        for name in names:
            if veth.delete_host_end(host, name, owned):
                removed.append(name)
        if container is not None and veth.delete_container_end(container, host, ifname, names, owned):
            removed.append(f"{ifname} in {container.path}")
    except NetlinkError as exc:
        raise DataplaneError(f"removing the interfaces of {ifname} failed", str(exc)) from None
    return removed


class Teardown:
    """`teardown` on a thread of its own, for a DEL that need not wait for all of it.

    Deleting a veth takes the kernel ~20 ms, nearly all of it after the link is closed (its routes
    gone) and unlisted: a grace period, which the kernel finishes even if this process dies.
    `unlisted()` returns once none of the host names is listed any more (or the teardown ended:
    a link that is not the attachment's stays); `result()` once the teardown is over, with its
    value or its exception; `finish()` waits for it on a way out that has its own error. On the
    thread, records go to the request's log (calico-node keeps one per request thread) and its
    timing to the request's line."""

    POLL = 0.0005  # seconds between two looks at the host's links while waiting for `unlisted`

    def __init__(self, host: Netns, container: Netns | None, ifname: str, host_names: Sequence[str], owned: Callable[[str], bool]) -> None:
        self._host = host
        self._names = [n for n in dict.fromkeys(host_names) if n]
        self._box: dict = {}
        request_log, parent = logs.request_log(), _thread.get_ident()

        def target() -> None:
            logs.log_to(request_log)
            try:
                self._box["result"] = teardown(host, container, ifname, host_names, owned)
            except BaseException as exc:  # noqa: BLE001 - raised again by result()
                self._box["error"] = exc
            finally:
                logs.log_to(None)
                if timing.ENABLED:
                    timing.hand_over(parent)

        self._thread = threading.Thread(target=target, name="cni-teardown", daemon=True)
        self._thread.start()

    def unlisted(self) -> None:
        """Wait until the kernel has unlisted every host name, or the teardown ended; a teardown
        that failed raises its error here, before the caller's datastore part (the veth and its
        routes may still be there: a DEL must fail before it deletes anything in etcd)."""
        try:
            watcher = self._host.run(Rtnl.open)
        except OSError:
            watcher = None
        try:
            while watcher is not None and self._thread.is_alive():
                if all(watcher.link(name) is None for name in self._names):
                    return
                time.sleep(self.POLL)
        except NetlinkError:
            pass  # cannot tell: wait for all of it
        finally:
            if watcher is not None:
                watcher.close()
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]

    def result(self) -> list[str]:
        """What was deleted, once the teardown is over (its error raised)."""
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["result"]

    def finish(self) -> None:
        """Wait for the teardown on a way out that has an error of its own to report."""
        self._thread.join()
        if "error" in self._box:
            log.warning("removing the interfaces failed too: %s", self._box["error"])


# --------------------------------------------------------------------------------------------
# Verification (CHECK)


def verify(host: Netns, container: Netns, spec: WorkloadSpec, container_mac: str | None = None) -> list[str]:
    """Every difference between the kernel and `spec`, as sentences (empty: all is well)."""
    try:
        return _verify(host, container, spec, container_mac)
    except NetlinkError as exc:
        raise DataplaneError("reading the dataplane failed", str(exc)) from None


def _verify(host: Netns, container: Netns, spec: WorkloadSpec, container_mac: str | None) -> list[str]:
    problems: list[str] = []
    hr, cr = host.rtnl(), container.rtnl()
    host_link = hr.link(spec.host_name)
    cont_link = cr.link(spec.ifname)
    where = f"in {container.path}"

    if host_link is None:
        problems.append(f"host interface {spec.host_name} does not exist")
    else:
        if host_link.alias != spec.alias:
            problems.append(f"host interface {spec.host_name} belongs to another attachment (alias {host_link.alias!r})")
        if not host_link.up:
            problems.append(f"host interface {spec.host_name} is down")
        if host_link.mac != veth.HOST_MAC:
            problems.append(f"host interface {spec.host_name} has MAC {host_link.mac}, expected {veth.HOST_MAC}")
        for version in sorted(spec.versions()):
            routes = hr.routes(version)
            for address in (a for a in spec.addresses if a.version == version):
                dst = routing.host_route(address)
                if not any(r.dst == dst and r.oif == host_link.index for r in routes):
                    other = [r for r in routes if r.dst == dst]
                    extra = f" (the node routes it via {routing.route_owner(hr, other[0])})" if other else ""
                    problems.append(f"the node has no route {dst} dev {spec.host_name}{extra}")

    if cont_link is None:
        problems.append(f"interface {spec.ifname} does not exist {where}")
        return problems
    if cont_link.kind != "veth":
        problems.append(f"{spec.ifname} {where} is a {cont_link.kind or 'device of unknown kind'}, not a veth")
    if host_link is not None and cont_link.peer_index and cont_link.peer_index != host_link.index:
        problems.append(f"{spec.ifname} {where} is not paired with {spec.host_name}")
    if not cont_link.up:
        problems.append(f"interface {spec.ifname} {where} is down")
    if container_mac and cont_link.mac != container_mac.lower():
        problems.append(f"interface {spec.ifname} {where} has MAC {cont_link.mac}, the result says {container_mac}")
    if spec.mtu and cont_link.mtu != spec.mtu:
        problems.append(f"interface {spec.ifname} {where} has MTU {cont_link.mtu}, the result says {spec.mtu}")
    if host_link is not None and host_link.mtu != cont_link.mtu:
        problems.append(f"the MTUs differ: {spec.host_name} has {host_link.mtu}, {spec.ifname} {where} has {cont_link.mtu}")
    have = {a.address for a in cr.addresses(cont_link.index)}
    for address in spec.addresses:
        if address not in have:
            problems.append(f"address {address} is missing from {spec.ifname} {where}")
    for version in sorted(spec.versions()):
        routes = [r for r in cr.routes(version) if r.oif == cont_link.index]
        if version == 4:
            if not any(r.dst == routing.GATEWAY_V4_NET and r.gateway is None for r in routes):
                problems.append(f"route {routing.GATEWAY_V4} dev {spec.ifname} is missing {where}")
            gateways = {routing.GATEWAY_V4}
        else:
            gateways = {r.gateway for r in routes if r.gateway is not None and r.gateway.is_link_local}
            if host_link is not None:
                actual = {a.address.ip for a in hr.addresses(host_link.index, 6) if a.address.ip.is_link_local}
                gateways &= actual
        for dst in routing.with_default(spec.routes, version):
            if not any(r.dst == dst and r.gateway in gateways for r in routes):
                via = routing.GATEWAY_V4 if version == 4 else f"{spec.host_name}'s link-local address"
                problems.append(f"route {dst} via {via} dev {spec.ifname} is missing {where}")
    return problems


def narrow(address: str) -> IPInterface:
    """"198.18.0.5/26" -> 198.18.0.5/32 (and /128 for IPv6)."""
    ip = ipaddress.ip_interface(address).ip
    return ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}")
