"""Cluster routing benchmark: calico-node and BIRD on 3 and on 20 nodes of one machine.

    .venv/bin/python -m bench.routing [--nodes 3,20] [--reps 8] [--observers 4] [--idle 30] [--busy 20]
                                      [--out bench/results]

Run as root (it creates network namespaces; the machine's own is never touched: see
bench/routing_support.py). For each cluster size it starts that many nodes on one bridge, each
with its own calico-node (and so its own BIRD, IPv4 only, full mesh), a pod on every node, then
measures:

- new block: a pod ADD on node A asking (CNI_ARGS IP=) for an address in a block nobody has
  claimed; from the ADD's start to the first reply of a `ping -i 0.005` started beforehand in a
  pod of each observer node B (and in A's own namespace: the pod's own readiness), to B's route in
  place (B's pings reaching A's link, an AF_PACKET tap), and from the affinity's confirmation in
  etcd (a watch of our own) to that route;
- borrowed address: an ADD on A from a pool whose one block node-1 holds, so A borrows; the same
  observations from the block's owner and from other nodes;
- node removal: a node vanishes (calico-node stopped, its uplink cut, BIRD killed: its peers keep
  the session until BGP's hold time), then `calicoctl delete node --force`; from the delete (and
  from the Node's deletion in etcd) to the last of its routes withdrawn on every other node
  (`ip monitor`); and a node whose BIRD is stopped cleanly (SIGTERM), from that stop;
- etcd load, from etcd's own /metrics: requests per second per node with the cluster idle and
  with a pod being added and deleted in a loop on every node;
- CPU: the machine's (from /proc/stat) and every calico-node's (with its `bird -p` children),
  BIRD's and etcd's (from /proc/<pid>/stat), per phase.

Writes routing.md and routing.json to --out. Everything it created is removed on exit, Ctrl-C and
SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.env import run_header, write_results
from bench.routing_support import (
    BenchCluster,
    BenchNode,
    EtcdEvents,
    LinkCapture,
    Pinger,
    cpu_sample,
    cpu_usage,
    etcd_metrics,
    fabric_with_etcd,
    metrics_delta,
    wait_for,
)

POOL_RESIDENT = "198.18.0.0/20"  # every node's first block, auto-assigned to its resident pod
POOL_FRESH = "198.18.64.0/18"  # IP= addresses in never-claimed /26 blocks: one new block per repetition
POOL_BORROW = "198.18.192.0/26"  # one block, claimed by node-1: every other node borrows from it
BLOCK_SIZE = 26
WAIT = 20.0  # seconds any one convergence is waited for before it counts as missed

# etcd methods that are streams, not one request each.
STREAMS = ("Watch", "LeaseKeepAlive")


def summary(values: list[float | None]) -> dict:
    """n, misses, median, p90 and max of values in seconds, reported in ms."""
    got = sorted(v for v in values if v is not None)
    out: dict = {"n": len(got), "missed": len(values) - len(got)}
    if got:
        out.update(median=round(statistics.median(got) * 1000, 1), p90=round(got[min(len(got) - 1, int(0.9 * len(got)))] * 1000, 1),
                   max=round(got[-1] * 1000, 1), min=round(got[0] * 1000, 1))
    return out


def _store(endpoint: str):
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    return Datastore(EtcdClient(EtcdSettings((endpoint,))))


def pools(endpoint: str) -> None:
    """An empty etcd but for the three pools."""
    from calico_cni.model.records import IPPool
    from tests.conftest import wipe

    wipe(endpoint)
    store = _store(endpoint)
    try:
        assert store.commit(puts=[IPPool.new("resident", POOL_RESIDENT, BLOCK_SIZE), IPPool.new("fresh", POOL_FRESH, BLOCK_SIZE),
                                  IPPool.new("borrow", POOL_BORROW, BLOCK_SIZE)])
    finally:
        store.close()


def observers(nodes: list[BenchNode], exclude: list[BenchNode], count: int, turn: int) -> list[BenchNode]:
    """Up to `count` nodes not in `exclude`, spread over the cluster and rotating with `turn`."""
    others = [n for n in nodes if n not in exclude and n.proc is not None]
    if not others:
        return []
    count = min(count, len(others))
    return [others[(turn + i * len(others) // count) % len(others)] for i in range(count)]


def build(cluster: BenchCluster, size: int, parallel: bool = True) -> dict:
    """Start `size` nodes (all at once with `parallel`), a resident pod on each (its first block),
    node-1's claim of the borrow pool's block, and wait until every node routes every other node's
    block. A node still missing a route after 60 s fails the run, naming the peers missing from
    every BIRD configuration (the way 20 nodes started at once found a watch that dropped events,
    fixed in 7403e04)."""
    started = cluster.add_nodes(size, parallel)
    began = time.monotonic()
    for node in cluster.nodes:
        node.resident, node.resident_ip, _ = cluster.add_pod(node, [POOL_RESIDENT])
    cluster.add_pod(cluster.nodes[0], [POOL_BORROW])
    for node in cluster.nodes:
        others = {n.ipv4 for n in cluster.nodes if n is not node}
        try:
            wait_for(f"{node.nodename}'s routes to every other node", lambda node=node, others=others: others <= set(node.remote_routes().values()), 60, 0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; peers missing from BIRD's configurations: {missing_peers(cluster)}") from None
    return {"start_s": round(started, 1), "mesh_s": round(time.monotonic() - began, 1)}


def _reply(pinger: Pinger, t0: float) -> float | None:
    reply = pinger.wait(WAIT)
    return reply - t0 if reply else None


def missing_peers(cluster: BenchCluster) -> dict[str, list[str]]:
    """Per node, the other nodes its BIRD configuration does not name."""
    out = {}
    for node in cluster.nodes:
        text = (node.state_dir / "bird.cfg").read_text() if (node.state_dir / "bird.cfg").exists() else ""
        missing = [n.nodename for n in cluster.nodes if n is not node and f"neighbor {n.ipv4} " not in text]
        if missing:
            out[node.nodename] = missing
    return out


@dataclass
class BlockClaim:
    """One new-block repetition under way: node A, the block and address it claims, the observers
    B with their pingers (in their resident pods), A's own pinger, the tap on A's link, and when
    (unix time) the ADD started and returned and the affinity's confirmation arrived (None if not)."""

    a: BenchNode
    block: str
    address: str
    watchers: list[BenchNode]
    pingers: list[Pinger]
    local: Pinger
    capture: LinkCapture
    t0: float = 0.0
    t1: float = 0.0
    claimed: float | None = None


@contextlib.contextmanager
def claim_new_block(cluster: BenchCluster, affinities: EtcdEvents, rep: int, count: int, pool: str = POOL_FRESH,
                    capture: type[LinkCapture] = LinkCapture) -> Iterator[BlockClaim]:
    """Repetition `rep` of a new block: on node A (rotating), pingers from `count` observers' pods
    and from A's own namespace and a `capture` tap on A's link, all started before an ADD with
    CNI_ARGS IP= in the `rep`th /26 of `pool` (nobody holds it, so A claims it); yields once the
    ADD returned and the affinity's confirmation was waited for; stops the pingers and the tap."""
    nodes = cluster.nodes
    a = nodes[rep % len(nodes)]
    fresh = ipaddress.ip_network(pool)
    block = str(ipaddress.ip_network((int(fresh.network_address) + rep * 2 ** (32 - BLOCK_SIZE), BLOCK_SIZE)))
    address = str(ipaddress.ip_network(block).network_address + 10)
    watchers = observers(nodes, [a], count, rep)
    tap = capture(a.fabric_link, address)
    started: list[Pinger] = []
    try:
        started.append(Pinger(a.ns, address))
        for b in watchers:
            started.append(Pinger(b.resident, address))
        claim = BlockClaim(a, block, address, watchers, started[1:], started[0], tap)
        time.sleep(0.2)  # the pingers are sending before the ADD starts
        claim.t0 = time.time()
        cluster.add_pod(a, None, IP=address)
        claim.t1 = time.time()
        key = f"/calico/ipam/v2/host/{a.nodename}/ipv4/block/{block.replace('/', '-')}"
        claim.claimed = affinities.wait(lambda op, k, v: op == "PUT" and k == key and "confirmed" in v, WAIT)
        yield claim
    finally:
        for pinger in started:
            pinger.stop()
        tap.stop()


def new_block(cluster: BenchCluster, reps: int, count: int) -> dict:
    """ADD with IP= in a block nobody holds, on a different node A each time, observed from
    `count` other nodes B (pings from their resident pods, started before the ADD) and from A's
    own namespace (the pod's own readiness: its veth and host route, no BGP involved). Also timed:
    the block's affinity confirmed in etcd (an etcd watch of our own) and the first echo request
    from each B reaching A's link (B's route in place)."""
    samples, per_rep = [], []
    affinities = EtcdEvents(cluster.endpoint, "/calico/ipam/v2/host/")
    try:
        for rep in range(reps):
            with claim_new_block(cluster, affinities, rep, count) as c:
                a = c.a
                exported = a.monitor.wait(lambda e: e.dst == c.block and not e.deleted and e.kind == "blackhole", c.t0, WAIT)
                rep_local = _reply(c.local, c.t0)
                per_rep.append({"add": c.t1 - c.t0, "local": rep_local, "claimed": c.claimed - c.t0 if c.claimed else None,
                                "exported": exported.when - c.t0 if exported else None})
                for b, pinger in zip(c.watchers, c.pingers):
                    reply = _reply(pinger, c.t0)
                    routed = c.capture.wait(b.resident_ip, 2.0 if reply is not None else 0.1)
                    route = b.monitor.wait(lambda e, a=a: e.dst == c.block and not e.deleted and e.gateway == a.ipv4, c.t0, WAIT)
                    samples.append({
                        "a": a.nodename, "b": b.nodename, "reply": reply, "routed": routed - c.t0 if routed else None,
                        "claim_to_route": routed - c.claimed if routed and c.claimed else None,
                        "route_monitor": route.when - c.t0 if route else None,
                        "after_local": reply - rep_local if reply is not None and rep_local is not None else None,
                    })
    finally:
        affinities.stop()
    return {
        "samples": samples,
        "per_rep": per_rep,
        "add": summary([r["add"] for r in per_rep]),
        "local": summary([r["local"] for r in per_rep]),
        "claimed": summary([r["claimed"] for r in per_rep]),
        "exported": summary([r["exported"] for r in per_rep]),
        "routed": summary([s["routed"] for s in samples]),
        "claim_to_route": summary([s["claim_to_route"] for s in samples]),
        "route_monitor": summary([s["route_monitor"] for s in samples]),
        "reply": summary([s["reply"] for s in samples]),
        "after_local": summary([s["after_local"] for s in samples]),
    }


def _next_borrowed(store) -> str | None:
    """The address the next allocation from the borrow pool's block takes: its first free
    ordinal (nothing is released there, so the allocator takes it), or None if unknown."""
    block = store.block(POOL_BORROW)
    if block is None or not block.unallocated:
        return None
    return str(block.address(block.unallocated[0]))


def borrowed(cluster: BenchCluster, reps: int, count: int) -> dict:
    """ADD from the borrow pool (its one block held by node-1) on another node A each time,
    observed from the block's owner and from other nodes, and from A itself. The pingers start
    before the ADD, towards the block's next free address; a repetition where the ADD took
    another address restarts them after the ADD (counted in `late`)."""
    nodes = cluster.nodes
    owner = nodes[0]
    borrow = ipaddress.ip_network(POOL_BORROW)
    samples, per_rep = [], []
    late = 0
    store = _store(cluster.endpoint)
    try:
        for rep in range(reps):
            a = nodes[1 + rep % (len(nodes) - 1)]
            watchers = [owner, *observers(nodes, [a, owner], count - 1, rep)]
            predicted = _next_borrowed(store)
            pingers = [Pinger(ns, predicted) for ns in (a.ns, *(b.resident for b in watchers))] if predicted else []
            capture = LinkCapture(a.fabric_link, predicted) if predicted else None
            try:
                time.sleep(0.2)
                t0 = time.time()
                _, address, _ = cluster.add_pod(a, [POOL_BORROW])
                t1 = time.time()
                if ipaddress.ip_address(address) not in borrow:
                    raise RuntimeError(f"{a.nodename} got {address}, not an address borrowed from {POOL_BORROW}")
                if address != predicted:
                    late += 1
                    for pinger in pingers:
                        pinger.stop()
                    if capture is not None:
                        capture.stop()
                    pingers = [Pinger(ns, address) for ns in (a.ns, *(b.resident for b in watchers))]
                    capture = LinkCapture(a.fabric_link, address)
                local = _reply(pingers[0], t0)
                per_rep.append({"add": t1 - t0, "local": local})
                for b, pinger in zip(watchers, pingers[1:]):
                    reply = _reply(pinger, t0)
                    routed = capture.wait(b.resident_ip, 2.0 if reply is not None else 0.1)
                    route = b.monitor.wait(lambda e, a=a, address=address: e.dst == f"{address}/32" and not e.deleted and e.gateway == a.ipv4, t0, WAIT)
                    samples.append({"a": a.nodename, "b": b.nodename, "owner": b is owner, "reply": reply, "routed": routed - t0 if routed else None,
                                    "route_monitor": route.when - t0 if route else None,
                                    "after_local": reply - local if reply is not None and local is not None else None,
                                    "route_after_local": routed - t0 - local if routed and local is not None else None})
            finally:
                for pinger in pingers:
                    pinger.stop()
                if capture is not None:
                    capture.stop()
    finally:
        store.close()
    return {
        "samples": samples,
        "per_rep": per_rep,
        "late": late,
        "add": summary([r["add"] for r in per_rep]),
        "local": summary([r["local"] for r in per_rep]),
        "routed": summary([s["routed"] for s in samples]),
        "route_after_local": summary([s["route_after_local"] for s in samples]),
        "route_monitor": summary([s["route_monitor"] for s in samples]),
        "reply": summary([s["reply"] for s in samples]),
        "reply_owner": summary([s["reply"] for s in samples if s["owner"]]),
        "reply_others": summary([s["reply"] for s in samples if not s["owner"]]),
        "after_local": summary([s["after_local"] for s in samples]),
    }


def _withdrawn(others: list[BenchNode], gone: BenchNode, routes: dict[str, set[str]], since: float) -> dict:
    """When each of `others` deleted the last of its routes via `gone` (seconds after `since`)."""
    per_node: dict[str, float | None] = {}
    for node in others:
        last = 0.0
        for dst in routes[node.nodename]:
            event = node.monitor.wait(lambda e, dst=dst: e.deleted and e.dst == dst and e.gateway == gone.ipv4, since, WAIT)
            if event is None:
                last = None
                break
            last = max(last, event.when - since)
        per_node[node.nodename] = last
    left = {n.nodename: sorted(d for d, gw in n.remote_routes().items() if gw == gone.ipv4) for n in others}
    values = list(per_node.values())
    return {
        "_values": values,
        "per_node": summary(values),
        "everywhere_ms": None if None in values else round(max(values, default=0) * 1000, 1),
        "routes_per_node": round(statistics.mean(len(r) for r in routes.values()), 1),
        "left_after": {k: v for k, v in left.items() if v},
    }


def removal(cluster: BenchCluster) -> dict:
    """The last node vanishes and is deleted; the one before it stops its BIRD cleanly."""
    out = {}
    gone = cluster.nodes[-1]
    others = [n for n in cluster.nodes[:-1]]
    routes = {n.nodename: {d for d, gw in n.remote_routes().items() if gw == gone.ipv4} for n in others}
    gone.stop()
    from tests import netns

    netns.ip("link", "set", gone.fabric_link, "down")
    gone.kill_bird(signal.SIGKILL)
    time.sleep(1.0)
    kept = sum(1 for n in others if any(gw == gone.ipv4 for gw in n.remote_routes().values()))
    key = f"/calico/resources/v3/projectcalico.org/nodes/{gone.nodename}"
    deletes = EtcdEvents(cluster.endpoint, key)
    try:
        time.sleep(0.3)  # the watch is open
        t0 = time.time()
        proc = cluster.delete_node(gone)
        took = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"calicoctl delete node: {proc.stdout} {proc.stderr}")
        withdrawn = _withdrawn(others, gone, routes, t0)
        deleted = deletes.wait(lambda op, k, v: op == "DELETE" and k == key, WAIT)
    finally:
        deletes.stop()
    after_delete = [None if v is None or deleted is None else v - (deleted - t0) for v in withdrawn.pop("_values")]
    out["vanished_then_deleted"] = {"calicoctl_s": round(took, 2), "nodes_still_routing_before_delete": kept, "of": len(others),
                                    "node_deleted_s": round(deleted - t0, 3) if deleted else None,
                                    **withdrawn, "after_node_deleted": summary(after_delete)}
    if len(cluster.nodes) >= 3:
        stopped = cluster.nodes[-2]
        others = [n for n in cluster.nodes[:-2]]
        routes = {n.nodename: {d for d, gw in n.remote_routes().items() if gw == stopped.ipv4} for n in others}
        stopped.stop()
        t0 = time.time()
        stopped.kill_bird(signal.SIGTERM)
        out["bird_stopped_cleanly"] = _withdrawn(others, stopped, routes, t0)
        out["bird_stopped_cleanly"].pop("_values")
        proc = cluster.delete_node(stopped)
        if proc.returncode != 0:
            raise RuntimeError(f"calicoctl delete node: {proc.stdout} {proc.stderr}")
    return out


def etcd_rates(delta: dict[str, float], seconds: float, nodes: int) -> dict:
    """Per node per second: unary requests (all, and by method), Watch streams opened, Watch
    messages received (create, progress requests) and sent (events, progress notifications)."""
    per = seconds * nodes
    unary = {k.split("/", 1)[1]: v for k, v in delta.items() if k.startswith("started/") and k.split("/", 1)[1] not in STREAMS}
    return {
        "unary": round(sum(unary.values()) / per, 3),
        "unary_by_method": {m: round(v / per, 3) for m, v in sorted(unary.items())},
        "watch_opened": round(delta.get("started/Watch", 0) / per, 4),
        "watch_in": round(delta.get("received/Watch", 0) / per, 3),
        "watch_out": round(delta.get("sent/Watch", 0) / per, 3),
        "events": round(delta.get("etcd_debugging_mvcc_events_total", 0) / per, 3),
        "bytes_in": round(delta.get("etcd_network_client_grpc_received_bytes_total", 0) / per, 1),
        "bytes_out": round(delta.get("etcd_network_client_grpc_sent_bytes_total", 0) / per, 1),
        "totals": {k: int(v) for k, v in sorted(delta.items())},
    }


def idle(cluster: BenchCluster, seconds: float, etcd_pid: int) -> dict:
    """Nothing changes for `seconds`: what calico-node alone asks of etcd, and what every process uses."""
    time.sleep(3)  # the last changes' passes are done
    m0, c0 = etcd_metrics(cluster.endpoint), cpu_sample(cluster.nodes, etcd_pid)
    time.sleep(seconds)
    m1, c1 = etcd_metrics(cluster.endpoint), cpu_sample(cluster.nodes, etcd_pid)
    return {"etcd": etcd_rates(metrics_delta(m0, m1), c1.when - c0.when, len(cluster.nodes)), "cpu": cpu_usage(c0, c1)}


def busy(cluster: BenchCluster, seconds: float, etcd_pid: int) -> dict:
    """A pod added and deleted in a loop on every node at once (each through its calico-node)."""
    stop = threading.Event()
    done = {"ops": 0, "errors": 0}
    lock = threading.Lock()

    def work(node: BenchNode) -> None:
        pod = cluster.new_pod_ns(node)
        conf = cluster.conf(node, [POOL_RESIDENT])
        turn = 0
        while not stop.is_set():
            turn += 1
            container = f"busy-{node.index}-{turn}"
            for verb in ("ADD", "DEL"):
                run = cluster.cni(node, verb, pod, container, conf)
                with lock:
                    done["ops" if run.rc == 0 else "errors"] += 1

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in cluster.nodes]
    for t in threads:
        t.start()
    try:
        time.sleep(2)  # every loop is running
        m0, c0, ops0 = etcd_metrics(cluster.endpoint), cpu_sample(cluster.nodes, etcd_pid), dict(done)
        time.sleep(seconds)
        m1, c1, ops1 = etcd_metrics(cluster.endpoint), cpu_sample(cluster.nodes, etcd_pid), dict(done)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wall = c1.when - c0.when
    ops = ops1["ops"] - ops0["ops"]
    return {"etcd": etcd_rates(metrics_delta(m0, m1), wall, len(cluster.nodes)), "cpu": cpu_usage(c0, c1),
            "cni_ops": ops, "cni_errors": ops1["errors"] - ops0["errors"], "cni_ops_per_s": round(ops / wall, 1)}


def phase(name: str, results: dict, cluster: BenchCluster, etcd_pid: int, fn, *args):
    """Run one measurement, recording the CPU everything used meanwhile."""
    print(f"  {name}", file=sys.stderr, flush=True)
    c0 = cpu_sample(cluster.nodes, etcd_pid)
    out = fn(*args)
    results.setdefault("cpu", {})[name] = cpu_usage(c0, cpu_sample(cluster.nodes, etcd_pid))
    results[name] = out
    return out


def run_size(server, size: int, args, workdir: Path) -> dict:
    """Every measurement on a new cluster of `size` nodes; the cluster is removed afterwards."""
    pools(server.endpoint)
    results: dict = {"nodes": size}
    began = time.monotonic()
    cluster = BenchCluster(workdir / f"cluster-{size}", server.endpoint, str(workdir / "journal"))
    try:
        pid = server.proc.pid
        phase("build", results, cluster, pid, build, cluster, size, not args.one_by_one)
        results["sessions"] = size * (size - 1) // 2
        phase("new_block", results, cluster, pid, new_block, cluster, args.reps, args.observers)
        phase("borrowed", results, cluster, pid, borrowed, cluster, args.reps, args.observers)
        results["idle"] = idle(cluster, args.idle, pid)
        results["busy"] = busy(cluster, args.busy, pid)
        phase("removal", results, cluster, pid, removal, cluster)
    finally:
        left = cluster.remove()
        if left:
            print(f"left running: {left}", file=sys.stderr)
    results["seconds"] = round(time.monotonic() - began, 1)
    return results


def _ms(s: dict, key: str = "median") -> str:
    value = s.get(key)
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _s_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def markdown(results: dict) -> str:
    """The report: convergence, CPU and etcd load per cluster size."""
    lines = [f"Routing benchmark run {results['when']} on {results['machine']} (`{results['command']}`).", ""]
    sizes = results["sizes"]
    header = "| measure | " + " | ".join(f"{r['nodes']} nodes: median (p90, max), n" for r in sizes) + " |"
    lines += [header, "|---" * (len(sizes) + 1) + "|"]

    def row(label: str, get) -> None:
        cells = []
        for r in sizes:
            s = get(r)
            missed = f", {s['missed']} missed" if s.get("missed") else ""
            cells.append(f"{_ms(s)} ({_ms(s, 'p90')}, {_ms(s, 'max')}), {s['n']}{missed}" if s.get("n") else f"- ({s.get('missed', 0)} missed)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("new block: the ADD on A itself", lambda r: r["new_block"]["add"])
    row("new block: ADD start -> block affinity confirmed in etcd", lambda r: r["new_block"]["claimed"])
    row("new block: ADD start -> first reply from A's own namespace (pod ready)", lambda r: r["new_block"]["local"])
    row("new block: ADD start -> B routes the block to A (B's pings reach A's link)", lambda r: r["new_block"]["routed"])
    row("**new block: affinity confirmed -> B routes the block to A**", lambda r: r["new_block"]["claim_to_route"])
    row("**new block: ADD start -> first reply from a pod on B**", lambda r: r["new_block"]["reply"])
    row("new block: B's first reply after A's own", lambda r: r["new_block"]["after_local"])
    row("borrowed: the ADD on A itself", lambda r: r["borrowed"]["add"])
    row("borrowed: ADD start -> first reply from A's own namespace (pod ready)", lambda r: r["borrowed"]["local"])
    row("borrowed: ADD start -> B routes the /32 to A (B's pings reach A's link)", lambda r: r["borrowed"]["routed"])
    row("**borrowed: pod ready on A -> B routes the /32 to A**", lambda r: r["borrowed"]["route_after_local"])
    row("**borrowed: ADD start -> first reply from a pod on the block's owner**", lambda r: r["borrowed"]["reply_owner"])
    row("**borrowed: ADD start -> first reply from a pod on another node**", lambda r: r["borrowed"]["reply_others"])
    row("node vanished: `calicoctl delete node --force` start -> its routes gone, per node", lambda r: r["removal"]["vanished_then_deleted"]["per_node"])
    row("**node vanished: Node deleted in etcd -> its routes gone, per node**", lambda r: r["removal"]["vanished_then_deleted"]["after_node_deleted"])
    row("BIRD stopped (SIGTERM) -> its routes gone, per node", lambda r: r["removal"].get("bird_stopped_cleanly", {}).get("per_node", {}))
    lines.append("| node vanished: delete start -> withdrawn on every node (Node deleted in etcd at; calicoctl's whole run) | " + " | ".join(
        f"{r['removal']['vanished_then_deleted']['everywhere_ms']} ms ({_s_ms(r['removal']['vanished_then_deleted']['node_deleted_s'])}; "
        f"{r['removal']['vanished_then_deleted']['calicoctl_s'] * 1000:.0f} ms)" for r in sizes) + " |")
    lines.append("| BIRD stopped: withdrawn on every node | " + " | ".join(
        f"{r['removal'].get('bird_stopped_cleanly', {}).get('everywhere_ms', '-')} ms" for r in sizes) + " |")
    how = "all at once" if results.get("parallel_start") else "one after the other"
    lines.append(f"| start: calico-nodes registered and watching ({how}) / then every block routed everywhere | " + " | ".join(
        f"{r['build']['start_s']} s / {r['build']['mesh_s']} s" for r in sizes) + " |")
    lines += ["", "CPU per phase (machine: busy share of all its vCPUs; calico-node includes its `bird -p` children):", "",
              "| nodes | phase | seconds | machine | calico-node: all (vCPU), mean, max per node | BIRD: all (vCPU), mean, max per node | etcd (vCPU) | benchmark (vCPU) | others on the machine (vCPU) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sizes:
        phases = {**r["cpu"], "idle": r["idle"]["cpu"], "busy": r["busy"]["cpu"]}
        for name in ("build", "new_block", "borrowed", "idle", "busy", "removal"):
            c = phases[name]
            lines.append(f"| {r['nodes']} | {name} | {c['seconds']} | {c['machine_pct']}% ({c['machine_vcpu']} vCPU) | "
                         f"{c['calico_node']['total_vcpu']}, {c['calico_node']['mean_pct']}%, {c['calico_node']['max_pct']}% | "
                         f"{c['bird']['total_vcpu']}, {c['bird']['mean_pct']}%, {c['bird']['max_pct']}% | {c['etcd_vcpu']} | "
                         f"{c['bench_vcpu']} | {c['others_vcpu']} |")
    lines += ["", "etcd load per node per second (etcd's own counters; unary = Range, Txn, Put, DeleteRange...; Watch messages on the streams):", "",
              "| nodes | cluster | unary requests | by method | Watch msgs in | Watch msgs out | CNI ops/s (all nodes) | unary per CNI op |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sizes:
        for name in ("idle", "busy"):
            e = r[name]["etcd"]
            ops = r[name].get("cni_ops_per_s")
            per_op = "-"
            if ops:
                idle_unary = r["idle"]["etcd"]["unary"]
                per_op = f"{(e['unary'] - idle_unary) * r['nodes'] / ops:.2f}"
            methods = ", ".join(f"{m} {v}" for m, v in e["unary_by_method"].items()) or "none"
            lines.append(f"| {r['nodes']} | {name} | {e['unary']} | {methods} | {e['watch_in']} | {e['watch_out']} | {ops if ops is not None else '-'} | {per_op} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="3,20", help="cluster sizes, comma separated (each at least 2)")
    parser.add_argument("--reps", type=int, default=8, help="new-block and borrowed-address repetitions per size")
    parser.add_argument("--observers", type=int, default=4, help="observer nodes per repetition")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle etcd-load window")
    parser.add_argument("--busy", type=float, default=20.0, help="seconds of the busy etcd-load window")
    parser.add_argument("--one-by-one", action="store_true",
                        help="start each calico-node once the one before it watches (default: all at once)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",") if s]
    if any(s < 2 for s in sizes):
        parser.error("every size needs at least 2 nodes")
    if os.geteuid() != 0:
        sys.exit("bench.routing: run as root (it creates network namespaces)")

    results: dict = {**run_header("bench.routing", argv), "sizes": [], "parallel_start": not args.one_by_one}
    with tempfile.TemporaryDirectory(prefix="calico-bench-routing-") as work, fabric_with_etcd() as server:
        for size in sizes:
            print(f"routing benchmark: {size} nodes", file=sys.stderr, flush=True)
            results["sizes"].append(run_size(server, size, args, Path(work)))
    write_results(args.out, "routing", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
