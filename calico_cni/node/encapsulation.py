"""The encapsulation controller: makes the kernel hold what `route_plan` plans from the cache
(VXLAN devices, their neighbour and FDB entries, the routes to other nodes' blocks, `tunl0`) and
writes the pod MTU to the MTU file the plugins read.

Level-triggered (design rule 27): every pass plans from the latest snapshot and compares with what
the kernel holds now, so a deleted device, a flushed neighbour or a route removed by hand comes
back within PERIOD; nothing is removed before the first full list of the datastore is in the cache.
It only ever changes what is its own (design rule 26): its devices by name and kind, the
neighbour and FDB entries on them, and routes with its protocol number (`rtnl.RTPROT_CALICO`) and
metric (`rtnl.CALICO_METRIC`, above a pod route's, so a pod's own route always wins). Each
problem is logged once while it lasts and reported in the part's health.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import time
from typing import Callable

from calico_cni.config import read_regular_file
from calico_cni.dataplane import tunnels
from calico_cni.dataplane.tunnels import IPIP_DEVICE, VXLAN_DEVICE
from calico_cni.dataplane.errors import DataplaneError, MtuError
from calico_cni.dataplane.mtu import DEFAULT_MTU, MAX_MTU, MIN_MTU, from_file, of_default_route
from calico_cni.dataplane.rtnl import CALICO_METRIC, IFF_LOOPBACK, RTN_BLACKHOLE, RTN_UNICAST, RTPROT_CALICO, Link, NetlinkError, Route, Rtnl
from calico_cni.dataplane.wiring import narrow
from calico_cni.files import replace_file
from calico_cni.model import keys
from calico_cni.node.cluster_view import BLOCKS, FELIX_CONFIGURATIONS, BlockMemo, ClusterView, NodeInfo
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.route_plan import Plan, Uplink, plan
from calico_cni.node.syncer import Cache, Snapshot

log = logging.getLogger(__name__)

# A pass runs on every change of the cache and at least this often (repairs kernel drift).
PERIOD = 2.0

# What the encapsulation, tunnel-address and rules parts read from the cache: Nodes, IP pools,
# FelixConfigurations and every IPAM block (the blocks say which node holds which addresses; every
# node receives every block write, as every Felix does).
WATCHED = (keys.NODES, keys.POOLS, FELIX_CONFIGURATIONS, BLOCKS)


def _key(dst, oif: int, gateway, blackhole: bool, onlink: bool) -> tuple:
    """How a route is compared: destination, device, gateway, blackhole, onlink."""
    return (dst, 0 if blackhole else oif, gateway, blackhole, onlink and not blackhole)


def _actual_key(route: Route) -> tuple:
    return _key(route.dst, route.oif, route.gateway, route.type == RTN_BLACKHOLE, route.onlink)


class EncapsulationController:
    """Keeps this node's tunnels, their entries and routes, and the MTU file, as the cache says."""

    def __init__(
        self, nodename: str, cache: Cache, mtu_file: str, cni_net_dir: str | None = None, open_rtnl: Callable[[], Rtnl] = Rtnl.open
    ) -> None:
        self.nodename = nodename
        self.cache = cache
        self.mtu_file = mtu_file
        self.cni_net_dir = cni_net_dir
        self.open_rtnl = open_rtnl
        self.problems = ProblemLog(log, "encapsulation")
        # A network configuration whose mtu the encapsulation has no room for: a warning (new pods
        # get that mtu, as the plugin's order says), not a reason to call the node not ready.
        self.warnings = ProblemLog(log, "encapsulation", logging.WARNING)
        self.parsed_blocks: BlockMemo = {}
        # The plan last made true, when (time.monotonic()), and what the kernel refused of it: a
        # pass whose plan is the same (a pod's address in a block whose route does not change,
        # the common write) leaves the kernel alone until PERIOD has passed since.
        self.applied: tuple[Plan, float, list[str]] | None = None
        # What the last full pass read of the kernel (the node as the view had it, its uplinks and
        # the host MTU): a pass for a change of the cache within PERIOD plans from it first, and
        # reads the kernel only when that plan differs from the one applied.
        self.kernel_facts: tuple[object, dict[int, Uplink], int] | None = None

    # -- one pass -------------------------------------------------------------------------------

    def run_pass(self, snapshot: Snapshot, recheck: bool = False) -> tuple[Plan, list[str]]:
        """One reconciliation from `snapshot`: the plan and what could not be made true (a kernel
        that refuses to be read is one of those: the next pass tries again). The kernel is
        compared with the plan when the plan changed, when PERIOD has passed since it last was,
        or with `recheck`."""
        items = snapshot.items
        view = ClusterView.read(items, self.nodename, self.parsed_blocks)
        for key in [k for k in self.parsed_blocks if k not in items]:
            del self.parsed_blocks[key]
        problems = list(view.problems)
        applied = self.applied
        facts = self.kernel_facts
        if not recheck and applied is not None and not applied[2] and facts is not None and facts[0] == view.me and time.monotonic() - applied[1] < PERIOD:
            # A pod's block written (the common change) leaves the plan as it was: no netlink dump
            # of every link and address for it (with 100 pods starting, these passes took a fifth
            # of calico-node's time). The kernel is read again at the latest after PERIOD.
            wanted = plan(view, facts[1], facts[2])
            if wanted == applied[0]:
                return wanted, problems + list(wanted.problems)
        wanted = Plan()
        kernel: list[str] = []
        try:
            with self.open_rtnl() as rtnl:
                links = {link.name: link for link in rtnl.links()}
                uplinks = _uplinks(rtnl, links, view.me)
                mtu = host_mtu(rtnl, links, uplinks)
                self.kernel_facts = (view.me, uplinks, mtu)
                wanted = plan(view, uplinks, mtu)
                problems += wanted.problems
                applied = self.applied
                # Skipped only after a pass that made the same plan true without a problem: one
                # the kernel refused is tried again on the next pass.
                if not recheck and applied is not None and applied[0] == wanted and not applied[2] and time.monotonic() - applied[1] < PERIOD:
                    return wanted, problems
                self.applied = None  # until this pass completes (a pass that raises is no proof)
                self._devices(rtnl, wanted, links, kernel)
                links = {link.name: link for link in rtnl.links()}
                self._vteps(rtnl, wanted, links, kernel)
                self._routes(rtnl, wanted, links, kernel)
        except OSError as exc:
            self.applied = None
            problems.append(f"the kernel's links, addresses or routes could not be read: {exc}")
            return wanted, problems
        if wanted.pod_mtu is not None:
            self.warnings.report(self._mtus_too_large(wanted))
            if MIN_MTU <= wanted.pod_mtu:
                self._write_mtu(min(wanted.pod_mtu, MAX_MTU), kernel)
            else:
                kernel.append(f"the pod MTU would be {wanted.pod_mtu}, below {MIN_MTU}: the host MTU is too small for the encapsulation; "
                              "set FelixConfiguration vxlanMTU (or ipipMTU); the MTU file is left as it is")
        self.applied = (wanted, time.monotonic(), kernel)
        return wanted, problems + kernel

    def _devices(self, rtnl: Rtnl, wanted: Plan, links: dict[str, Link], problems: list[str]) -> None:
        for family, name in VXLAN_DEVICE.items():
            device = wanted.vxlan.get(family)
            try:
                if device is None:
                    # Removed only when no pool of the family uses VXLAN: while one does but the
                    # device cannot be planned (no tunnel address yet), it keeps its entries.
                    if family not in wanted.vxlan_in_use and name in links and links[name].kind == "vxlan" and tunnels.remove_device(rtnl, name):
                        log.info("encapsulation: removed %s: no IPv%d pool uses VXLAN now", name, family)
                    continue
                spec = tunnels.VxlanDevice(
                    name=name, vni=device.vni, port=device.port, local=device.local, parent_index=device.parent.index,
                    mac=device.mac, mtu=device.mtu, address=narrow(str(device.address)),
                )
                for change in tunnels.ensure_vxlan(rtnl, spec):
                    log.info("encapsulation: %s: %s", name, change)
            except (DataplaneError, OSError) as exc:
                problems.append(f"{name}: {exc}")
        if wanted.ipip is not None:
            mtu, address = wanted.ipip
            try:
                for change in tunnels.ensure_ipip(rtnl, mtu, narrow(str(address))):
                    log.info("encapsulation: %s: %s", IPIP_DEVICE, change)
            except (DataplaneError, OSError) as exc:
                problems.append(
                    f"IPIP pools {', '.join(wanted.ipip_pools)}: {exc}; only their CrossSubnet routes to nodes in this node's subnet are programmed"
                )
        elif wanted.ipip_pools:
            problems.append(f"IPIP pools {', '.join(wanted.ipip_pools)}: waiting for this node's IPIP tunnel address; {IPIP_DEVICE} is not programmed")

    def _vteps(self, rtnl: Rtnl, wanted: Plan, links: dict[str, Link], problems: list[str]) -> None:
        """The neighbour (tunnel address -> MAC) and FDB (MAC -> node address) entries of each
        VXLAN device: exactly one per remote VTEP."""
        for family, device in wanted.vxlan.items():
            link = links.get(device.name)
            if link is None:
                continue
            want = {v.tunnel_address: (v.mac, v.node_address) for v in wanted.vteps if v.family == family}
            try:
                for change in tunnels.sync_vteps(rtnl, link, family, want):
                    log.info("encapsulation: %s", change)
            except OSError as exc:
                problems.append(f"{device.name}: the VTEP entries could not be programmed: {exc}")

    def _routes(self, rtnl: Rtnl, wanted: Plan, links: dict[str, Link], problems: list[str]) -> None:
        """Exactly the planned routes with our protocol and metric: a missing one added, one of
        ours that differs replaced in place, ours for a destination no longer planned removed.
        Another program's route in the way (same destination and metric) is reported and left
        alone (design rule 26): the kernel's replace would not look at the protocol."""
        desired: dict = {}  # destination -> (its key, the planned route, its device's index)
        for route in wanted.routes:
            oif = 0
            if not route.blackhole:
                link = links.get(route.device or "")
                if link is None:
                    continue  # its device is missing: reported with the device
                oif = link.index
            desired[route.dst] = (_key(route.dst, oif, route.gateway, route.blackhole, route.onlink), route, oif)
        for version in (4, 6):
            try:
                found = [r for r in rtnl.routes(version, protocol=RTPROT_CALICO) if r.priority == CALICO_METRIC]
            except OSError as exc:
                problems.append(f"IPv{version} routes could not be listed: {exc}")
                continue
            # One route of ours per destination: the one matching the plan if there is one (IPv6
            # keeps several with one destination and metric as multipath siblings); others go.
            ours: dict = {}
            extra: list[Route] = []
            for r in found:
                want = desired.get(r.dst)
                kept = ours.get(r.dst)
                if kept is None:
                    ours[r.dst] = r
                elif want is not None and _actual_key(r) == want[0] and _actual_key(kept) != want[0]:
                    extra.append(kept)
                    ours[r.dst] = r
                else:
                    extra.append(r)
            for route in extra:
                try:
                    rtnl.delete_route(route)
                except NetlinkError as exc:
                    problems.append(f"duplicate route {route.dst}: {exc}")
            for dst, (key, route, oif) in desired.items():
                current = ours.get(dst)
                if dst.version != version or (current is not None and _actual_key(current) == key):
                    continue
                try:
                    rtnl.add_route(
                        dst, oif, route.gateway, priority=CALICO_METRIC, replace=current is not None,
                        protocol=RTPROT_CALICO, route_type=RTN_BLACKHOLE if route.blackhole else RTN_UNICAST, onlink=route.onlink,
                    )
                except NetlinkError as exc:
                    if exc.errno == errno.EEXIST:
                        problems.append(f"route {route}: another program's route to {dst} with metric {CALICO_METRIC} is in the way; left alone")
                    else:
                        problems.append(f"route {route}: {exc}")
            for dst, route in ours.items():
                if dst not in desired:
                    try:
                        rtnl.delete_route(route)
                    except NetlinkError as exc:
                        problems.append(f"stale route {dst}: {exc}")

    def _mtus_too_large(self, wanted: Plan) -> list[str]:
        """The calico network configurations in the CNI directory whose `mtu` is above the pod MTU
        while an encapsulation is in use (the `mtu` key wins over the MTU file)."""
        if self.cni_net_dir is None or not (wanted.vxlan_in_use or wanted.ipip_pools) or wanted.pod_mtu is None:
            return []
        return [
            f"{path}: the calico plugin's mtu {mtu} is above {wanted.pod_mtu}, what the encapsulation in use leaves room for; "
            f"new pods get {mtu} and lose or fragment large packets to other nodes: lower it, or remove it so that pods get the MTU file's"
            for path, mtu in calico_mtus(self.cni_net_dir)
            if mtu > wanted.pod_mtu
        ]

    def _write_mtu(self, mtu: int, problems: list[str]) -> None:
        """The pod MTU for new pods (the plugins read it when the network configuration sets no
        `mtu`); written only when it differs, atomically (a plugin never reads half a file)."""
        try:
            if from_file(self.mtu_file) == mtu:
                return
        except MtuError:
            pass  # unreadable or not an MTU: replaced
        try:
            replace_file(self.mtu_file, f"{mtu}\n")
        except OSError as exc:
            problems.append(f"cannot write the pod MTU to {self.mtu_file}: {exc.strerror or exc}")
            return
        log.info("encapsulation: pod MTU %d written to %s", mtu, self.mtu_file)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            wanted, problems = self.run_pass(snapshot)
            self.problems.report(problems)
            return (False, "; ".join(problems)) if problems else (True, _summary(wanted))

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)


# Felix's default mtuIfacePattern: the interfaces whose smallest MTU is the host's.
HOST_INTERFACES = re.compile(r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)")


def host_mtu(rtnl: Rtnl, links: dict[str, Link], uplinks: dict[int, Uplink]) -> int:
    """The MTU of the node's network: the smallest among the up interfaces Felix's pattern names;
    else the smallest of the interfaces holding the node addresses (not a loopback: a node address
    on lo leaves through another device); else the default route's device; else 1500."""
    named = [link.mtu for link in links.values() if link.up and link.mtu and HOST_INTERFACES.match(link.name)]
    if named:
        return min(named)
    by_index = {link.index: link for link in links.values()}
    parents = [by_index[u.index].mtu for u in uplinks.values() if u.index in by_index and not by_index[u.index].flags & IFF_LOOPBACK]
    if parents:
        return min(parents)
    found = of_default_route(rtnl)
    return found[0] if found is not None else DEFAULT_MTU


def calico_mtus(directory: str) -> list[tuple[str, int]]:
    """(file, mtu) of every `calico` plugin that sets `mtu` in the network configurations of
    `directory` (*.conf, *.conflist, *.json; unreadable or foreign files are skipped)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.endswith((".conf", ".conflist", ".json")):
            continue
        path = os.path.join(directory, name)
        try:
            doc = json.loads(read_regular_file(path, 1 << 20))
        except (OSError, ValueError):
            continue
        plugins = doc.get("plugins") if isinstance(doc, dict) and isinstance(doc.get("plugins"), list) else [doc]
        for plugin in plugins:
            mtu = plugin.get("mtu") if isinstance(plugin, dict) and plugin.get("type") == "calico" else None
            if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu > 0:
                found.append((path, mtu))
    return found


def _uplinks(rtnl: Rtnl, links: dict[str, Link], me: NodeInfo | None) -> dict[int, Uplink]:
    """The interface holding each of this node's addresses (the tunnels' parent), by family."""
    if me is None:
        return {}
    by_index = {link.index: link for link in links.values()}
    out: dict[int, Uplink] = {}
    held_addresses = rtnl.addresses()
    for family in (4, 6):
        address = me.address(family)
        if address is None:
            continue
        for held in held_addresses:
            link = by_index.get(held.index)
            if held.address.ip == address.ip and link is not None:
                out[family] = Uplink(link.index, link.name)
                break
    return out


def _summary(wanted: Plan) -> str:
    parts = [f"{d.name} with {sum(1 for v in wanted.vteps if v.family == f)} VTEPs" for f, d in sorted(wanted.vxlan.items())]
    parts.append(f"{len(wanted.routes)} routes")
    if wanted.pod_mtu is not None:
        parts.append(f"pod MTU {wanted.pod_mtu}")
    return ", ".join(parts)
