"""calico-node's run: the plugins' socket first, then Calico's start-up (the Node resource, default
pools, cluster records, nodename file), then the parts: the syncer that lists and watches the
datastore into one cache, and the controllers that read it: routing (BIRD's configuration, bird
backend), tunnel-addresses (the node's VXLAN and IPIP addresses in IPAM), encapsulation (VXLAN
devices, VTEP entries and routes to other nodes' blocks, the pod MTU file) and rules (the daemon's
nftables tables: NAT outgoing, the VXLAN port's guards, network policy; the plugins' requests call
it to have a pod's policy in the kernel before they answer).

The socket is served from the first second and stays up whatever a part does: a part that fails is
restarted with back-off and reported in the health answer (`calico-node -felix-ready`). Every part
uses the warm etcd channel the plugins' requests use. SIGTERM or SIGINT stops the daemon; BIRD is
left running (it keeps the routes; the next calico-node adopts it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from calico_cni import logs
from calico_cni.agent.client import policy_marker
from calico_cni.agent.daemon import PluginServing, open_serving
from calico_cni.dataplane.bird import Bird
from calico_cni.datastore.errors import DatastoreUnavailable
from calico_cni.datastore.store import Datastore
from calico_cni.errors import CalicoError
from calico_cni.node import encapsulation, hints, rules, startup
from calico_cni.node.parts import Part, PartHealth, Parts
from calico_cni.node.routing import PERIOD, RoutingController, watched
from calico_cni.node.tunnel_addresses import PERIOD as TUNNEL_ADDRESSES_PERIOD
from calico_cni.node.tunnel_addresses import TunnelAddressController
from calico_cni.node.settings import NodeSettings
from calico_cni.node.syncer import Cache, Syncer

log = logging.getLogger(__name__)

PROGRAM = "calico-node"
# Start-up waits for etcd this long between attempts at most (it never gives up: a node booting
# before its datastore must come up when the datastore does).
STARTUP_RETRY_MAX = 10.0


def watched_prefixes(node: str) -> tuple[str, ...]:
    """The prefixes calico-node's syncer lists and watches into its cache: what its controllers read
    and what `node.hints` offers the plugins' requests (the node, pools, reservations, its
    affinities, ClusterInformation, the IPAM config, profiles, endpoints). Tests and bench.ipam
    build their caches from this, so a prefix dropped here shows in their round-trip counts."""
    return tuple(dict.fromkeys([*watched(node), *encapsulation.WATCHED, *rules.WATCHED, *hints.WATCHED]))


class NodeDaemon:
    """The running daemon: its socket, cache and parts."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.cache = Cache(indexed=hints.indexed(settings.nodename))
        # The cache as hints for the plugins' requests to this etcd (fewer round trips per pod).
        self.hints = hints.CacheHints(self.cache, settings.etcd)
        self.syncer: Syncer | None = None
        self.parts = Parts([])
        self.registered = False
        # Start-up's own state: the one part the health answer reports until the node is registered.
        self.startup = PartHealth()
        self.serving: PluginServing | None = None
        # The nftables tables and network policy: a part, and what the plugins' requests call to
        # have a pod's policy in the kernel before they answer.
        self.rules = rules.RulesController(settings.nodename, self.cache, enforcement=rules.Enforcement(policy_marker(settings.cni_socket), self._connect))

    def _connect(self) -> Datastore:
        """A datastore over the warm channel the requests use (for a part's occasional write)."""
        assert self.serving is not None
        return self.serving.stores.connect(self.settings.etcd)

    def health(self) -> dict:
        """The daemon's part of the health answer on the plugins' socket (read by the probes)."""
        snapshot = self.cache.snapshot()
        syncer = self.syncer.status() if self.syncer is not None else None
        return {
            "program": PROGRAM,
            "node": self.settings.nodename,
            "registered": self.registered,
            # In sync: the first list is in and a watch runs now (the felix probes read this).
            "in_sync": bool(syncer and syncer["in_sync"]),
            "revision": snapshot.revision,
            "syncer": syncer,
            "parts": self.parts.status() if self.registered else {"startup": self.startup.as_dict()},
        }

    def register(self, serving: PluginServing) -> startup.Registration | None:
        """Calico's start-up, retried while etcd cannot be reached (each failure reported in the
        health answer; logged as a warning unless it repeats the last one); None when stopped first."""
        delay = 0.5
        self.startup.alive = True
        last: str | None = None
        while not self.stop.is_set():
            store = serving.stores.connect(self.settings.etcd)
            try:
                return startup.run(self.settings, store)
            except DatastoreUnavailable as exc:
                problem = str(exc)
            finally:
                store.client.close()
            self.startup.failed(problem)
            log.log(logging.DEBUG if problem == last else logging.WARNING, "start-up: %s; trying again in %.1fs", problem, delay)
            last = problem
            self.stop.wait(delay)
            delay = min(delay * 2, STARTUP_RETRY_MAX)
        return None

    def monitor_addresses(self, serving: PluginServing, stop: threading.Event, health: PartHealth) -> None:
        """Calico's monitor-addresses: every AUTODETECT_POLL_INTERVAL, detect the autodetected
        addresses again and update the Node when they changed (nothing is written otherwise). A
        failed detection or an address another node has is reported (the part is not ready; the
        Node's address is cleared, as Calico's start-up clears it), where Calico's monitor exits."""
        interval = self.settings.autodetect_poll_interval
        health.ok("addresses as registered at start-up")
        while not stop.wait(interval):
            store = serving.stores.connect(self.settings.etcd)
            changes: list[str] = []
            try:
                startup.register_node(self.settings, store, startup.Host(), changes)
            except (startup.StartupError, DatastoreUnavailable) as exc:
                if health.as_dict()["detail"] != str(exc):
                    log.error("addresses: %s", exc)
                health.not_ready(str(exc))
                continue
            finally:
                store.client.close()
            health.ok(f"addresses checked; {', '.join(changes)}" if changes else "addresses checked")

    def _parts(self, serving: PluginServing) -> list[Part]:
        settings = self.settings
        syncer = self.syncer = Syncer(lambda: serving.stores.connect(settings.etcd).client, watched_prefixes(settings.nodename), self.cache)

        def sync(stop: threading.Event, health: PartHealth) -> None:
            health.not_ready("listing the datastore")
            syncer.run(stop, health)

        parts = [Part("syncer", sync)]
        if settings.backend != "none" and settings.autodetect_poll_interval > 0 and "autodetect" in (settings.ip or "autodetect", settings.ip6):
            parts.append(Part("addresses", lambda stop, health: self.monitor_addresses(serving, stop, health), settings.autodetect_poll_interval))
        if settings.backend == "bird":
            bird = Bird(settings.bird_config, settings.bird_socket, settings.bird_pid)
            controller = RoutingController(settings.nodename, settings.router_id, self.cache, bird)
            parts.append(Part("routing", controller.run, PERIOD))
        if settings.backend != "none":
            # VXLAN and IPIP pools are the daemon's with either backend (BIRD keeps them out of the
            # kernel), as Felix programs them whatever calico-node's backend is.
            tunnel_addresses = TunnelAddressController(settings.nodename, self.cache, lambda: serving.stores.connect(settings.etcd))
            parts.append(Part("tunnel-addresses", tunnel_addresses.run, TUNNEL_ADDRESSES_PERIOD))
            tunnels = encapsulation.EncapsulationController(settings.nodename, self.cache, settings.mtu_file, settings.cni_net_dir)
            parts.append(Part("encapsulation", tunnels.run, encapsulation.PERIOD))
        parts.append(Part("rules", self.rules.run, rules.PERIOD))
        return parts

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code. A CalicoError when calico-node cannot start."""
        path = self.settings.cni_socket
        try:
            serving = self.serving = open_serving(path, PROGRAM, self.health, self.rules, self.hints)
        except OSError as exc:
            raise startup.StartupError(
                f"cannot serve the plugins on {path}",
                f"{exc.strerror or exc}: set CALICO_RUN_DIR to a directory calico-node can create, whose path is short "
                f"enough for a Unix socket (at most 107 bytes with the socket's name)",
            ) from None
        server = threading.Thread(target=serving.server.serve_forever, name="cni-socket", daemon=True)
        server.start()
        log.info("%s: serving the plugins on %s", PROGRAM, self.settings.cni_socket)
        try:
            registration = self.register(serving)
            if registration is None:
                return 0
            self.parts = Parts(self._parts(serving), self.stop)
            self.parts.start()
            self.registered = True
            while not self.stop.wait(1.0):
                pass
            return 0
        finally:
            self.parts.stop()
            serving.close()
            server.join(5)


def run(settings: NodeSettings) -> int:
    """Run calico-node with `settings` until SIGTERM or SIGINT; the exit code."""
    logs.setup_agent({"level": settings.log_level, "path": settings.log_file}, PROGRAM)
    daemon = NodeDaemon(settings)

    def stop(_signum, _frame) -> None:
        daemon.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    try:
        return daemon.run()
    except CalicoError as exc:
        # A setting or a datastore answer start-up cannot get past (an unreachable etcd is retried
        # instead): one line saying what is wrong; a supervisor restarts calico-node.
        log.error("start-up failed: %s", exc)
        return 1
    finally:
        log.info("%s: stopped after %.0fs", PROGRAM, time.monotonic() - started)
