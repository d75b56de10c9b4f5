"""Encapsulation benchmark: pod to pod across two nodes natively and over VXLAN, and how fast a new
block's VXLAN route reaches every node of 3 and of 20.

    .venv/bin/python -m bench.encapsulation [--nodes 3,20] [--reps 8] [--observers 4] [--seconds 5]
                                            [--rounds 3] [--iperf-reps 2] [--pings 1000] [--requests 5000] [--idle 10]
                                            [--no-path] [--out bench/results]

Run as root. The clusters are bench/routing_support.py's (a fabric namespace with etcd and a bridge,
one namespace per node running its own calico-node, one per pod); nothing touches the machine's own
namespace, and everything is removed on exit, Ctrl-C and SIGTERM included.

- Data path, on 2 nodes, natively (CALICO_NETWORKING_BACKEND=bird, pools with vxlanMode
  Never: BIRD's routes via the other node's address on eth0) and over VXLAN
  (CALICO_NETWORKING_BACKEND=vxlan, vxlanMode Always: calico-node's routes via the other node's
  tunnel address on vxlan.calico): iperf3 TCP from a pod on node-1 to an iperf3 server in a pod
  on node-2 (`--iperf-reps` runs of `--seconds`), `ping -i 0.002` round trips between the same
  pods, and a TCP request-response of one byte each way (a Python echo server and client, Nagle
  off). Pods take their MTU from calico-node's MTU file, so the VXLAN pods have the host's minus 50.
  `--rounds` new pairs of nodes per mode, native and VXLAN alternating, so load from elsewhere on
  the machine falls on both; the figures pool every round's runs and samples.
- Convergence under VXLAN, on 3 and on 20 nodes (backend vxlan, no BIRD): a pod ADD on node A with
  `CNI_ARGS IP=` in a block nobody holds, so A claims it; from the ADD's start until every other
  node's kernel holds the route to the block via A's tunnel address on vxlan.calico (proto 80: `ip
  -ts monitor route` in every node, print times, so upper bounds), from the affinity's
  confirmation in etcd (an etcd watch of ours) to the same, and, for `--observers` nodes B, until
  B's pod's pings reach A's link encapsulated (an AF_PACKET tap on A's port, kernel timestamps)
  and until B's pod gets its first reply. Also the CPU of every calico-node and of etcd over
  `--idle` seconds with nothing changing, and over the new-block repetitions.

Writes encapsulation.md and encapsulation.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.env import run_header, write_results
from bench.routing import _store, claim_new_block, summary
from bench.routing_support import BenchCluster, BenchNode, EtcdEvents, LinkCapture, cpu_sample, cpu_usage, fabric_with_etcd, machine_ticks, wait_for
from tests import netns
from tests.calico_support import in_ns, ip_json
from tests.cluster_support import block_of

POOL_RESIDENT = "198.18.0.0/20"  # every node's first block (its resident pod and its tunnel address)
POOL_FRESH = "198.18.64.0/18"  # IP= addresses in never-claimed /26 blocks; Workload only, so no tunnel address lands there
BLOCK_SIZE = 26
DEVICE = "vxlan.calico"
PROTO = "80"  # the protocol number of calico-node's own routes
VXLAN_PORT = 4789
IPERF_PORT = 5201
ECHO_PORT = 7070
WAIT = 20.0  # seconds any one convergence is waited for before it counts as missed

# mode -> (CALICO_NETWORKING_BACKEND, the pools' vxlanMode)
MODES = {"native": ("bird", "Never"), "vxlan": ("vxlan", "Always")}

_ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(64)
    if not d:
        break
    c.sendall(d)
"""

_ECHO_CLIENT = """
import json, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n, warm, out = int(sys.argv[3]), 200, []
for i in range(n + warm):
    t = time.perf_counter_ns()
    c.sendall(b"x")
    if not c.recv(64):
        sys.exit("echo server closed the connection")
    if i >= warm:
        out.append(time.perf_counter_ns() - t)
print(json.dumps(out))
"""


class VxlanCapture(LinkCapture):
    """LinkCapture for VXLAN: ICMP echo requests to `dst` carried in UDP to the VXLAN port (outer
    IPv4, VXLAN header, inner Ethernet and IPv4), by their inner source: a request from B's pod
    reaches A's link this way only once B routes `dst` through vxlan.calico to A."""

    def __init__(self, link: str, dst: str, port: int = VXLAN_PORT) -> None:
        self._port = port  # before the reader thread starts
        super().__init__(link, dst)

    def _source(self, packet: bytes) -> str | None:
        header = (packet[0] & 0x0F) * 4 if packet else 0
        if len(packet) < header + 8 + 8 + 14 or packet[9] != 17:  # UDP
            return None
        if int.from_bytes(packet[header + 2 : header + 4], "big") != self._port:
            return None
        inner = packet[header + 16 :]  # after UDP (8) and VXLAN (8) headers: the inner Ethernet frame
        if inner[12:14] != b"\x08\x00":
            return None
        return super()._source(inner[14:])


# --- the clusters ---------------------------------------------------------------------------------

def pools(endpoint: str, vxlan_mode: str) -> None:
    """An empty etcd but for the two pools, both with `vxlan_mode`."""
    from calico_cni.model.records import WORKLOAD, IPPool
    from tests.conftest import wipe

    wipe(endpoint)
    resident = IPPool.new("resident", POOL_RESIDENT, BLOCK_SIZE)
    fresh = IPPool.new("fresh", POOL_FRESH, BLOCK_SIZE, allowed_uses=(WORKLOAD,))
    for pool in (resident, fresh):
        pool.doc["spec"]["vxlanMode"] = vxlan_mode
    store = _store(endpoint)
    try:
        if not store.commit(puts=[resident, fresh]):
            raise RuntimeError("could not write the benchmark's pools to its etcd")
    finally:
        store.close()


def tunnel_address(node: BenchNode) -> str | None:
    """The IPv4 address on the node's vxlan.calico, or None while it has none."""
    proc = in_ns(node.ns, "ip", "-j", "-4", "addr", "show", "dev", DEVICE, check=False)
    if proc.returncode != 0:
        return None
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            return info.get("local")
    return None


def vxlan_routes(node: BenchNode) -> dict[str, str]:
    """calico-node's IPv4 routes through vxlan.calico: destination -> gateway (a tunnel address)."""
    return {r["dst"]: r.get("gateway") for r in ip_json(node.ns, "-4", "route", "show", "proto", PROTO) if r.get("dev") == DEVICE}


def route_device(node: BenchNode, address: str) -> str | None:
    """The device the node's kernel sends `address` out of (`ip route get`)."""
    got = ip_json(node.ns, "-4", "route", "get", address)
    return got[0].get("dev") if got else None


def pod_mtu(pod: str) -> int:
    """The MTU of a pod's eth0."""
    return json.loads(in_ns(pod, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"]


def routed_everywhere(cluster: BenchCluster, mode: str) -> list[str]:
    """What is still missing for every node to route every other node's resident block (natively:
    BIRD's route via the node's address; VXLAN: calico-node's via its tunnel address); empty when
    nothing is."""
    missing = []
    tunnels = {n.nodename: tunnel_address(n) for n in cluster.nodes} if mode == "vxlan" else {}
    for node in cluster.nodes:
        have = vxlan_routes(node) if mode == "vxlan" else node.remote_routes()
        for other in cluster.nodes:
            if other is node:
                continue
            want = tunnels[other.nodename] if mode == "vxlan" else other.ipv4
            block = block_of(other.resident_ip, BLOCK_SIZE)
            if want is None or have.get(block) != want:
                missing.append(f"{node.nodename} -> {block} via {want}")
    return missing


def build(cluster: BenchCluster, size: int, mode: str) -> dict:
    """Start `size` nodes at once; under VXLAN wait for each one's MTU file (its pods read it at
    ADD); a resident pod on each; then wait until every node routes every other's block."""
    started = cluster.add_nodes(size)
    began = time.monotonic()
    if mode == "vxlan":
        for node in cluster.nodes:
            wait_for(f"{node.nodename}'s MTU file (log {node.log})", lambda node=node: (node.state_dir / "mtu").exists(), 60, 0.1)
    for node in cluster.nodes:
        node.resident, node.resident_ip, _ = cluster.add_pod(node, [POOL_RESIDENT])
    try:
        wait_for("every node's routes to every other node's block", lambda: not routed_everywhere(cluster, mode), 60, 0.2)
    except AssertionError:
        raise AssertionError(f"{mode}, {size} nodes: routes still missing after 60 s: {routed_everywhere(cluster, mode)[:10]}") from None
    first = cluster.nodes[0]
    mtu_file = first.state_dir / "mtu"
    return {"start_s": round(started, 1), "routed_s": round(time.monotonic() - began, 1),
            "mtu_file": mtu_file.read_text().strip() if mtu_file.exists() else None, "pod_mtu": pod_mtu(first.resident)}


# --- the data path --------------------------------------------------------------------------------

def _in_pod(pod: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={netns.NETNS_DIR}/{pod}", *argv]


def _listening(pod: str, port: int) -> bool:
    return bool(in_ns(pod, "ss", "-Hltn", f"sport = :{port}").stdout.strip())


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def throughput(a: BenchNode, b: BenchNode, seconds: float, reps: int) -> dict:
    """iperf3 TCP from A's pod to an iperf3 server in B's pod, `reps` runs of `seconds`: receiver
    throughput, retransmits, and the machine's busy vCPUs meanwhile (sender, receiver and the
    encapsulation all run on the same CPUs)."""
    server = subprocess.Popen(_in_pod(b.resident, "iperf3", "-s", "-B", b.resident_ip, "-p", str(IPERF_PORT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = []
    try:
        wait_for("iperf3's server", lambda: _listening(b.resident, IPERF_PORT), 10, 0.05)
        for _ in range(reps):
            m0 = machine_ticks()
            proc = subprocess.run(_in_pod(a.resident, "iperf3", "-c", b.resident_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"),
                                  capture_output=True, text=True, timeout=seconds + 30)
            m1 = machine_ticks()
            if proc.returncode != 0:
                raise RuntimeError(f"iperf3 client: {proc.stdout[-1500:]} {proc.stderr[-500:]}")
            end = json.loads(proc.stdout)["end"]
            runs.append({"gbit_s": round(end["sum_received"]["bits_per_second"] / 1e9, 3), "retransmits": end["sum_sent"].get("retransmits"),
                         "machine_vcpu": round((m1[0] - m0[0]) / max(m1[1] - m0[1], 1) * (os.cpu_count() or 1), 2)})
    finally:
        _stop(server)
    rates = [r["gbit_s"] for r in runs]
    return {"runs": runs, "median_gbit_s": round(statistics.median(rates), 3), "min_gbit_s": min(rates), "max_gbit_s": max(rates)}


def _percentiles(values_us: list[float]) -> dict:
    """n, mean and p50/p90/p99/max of round trips in microseconds."""
    got = sorted(values_us)

    def at(q: float) -> float:
        return round(got[min(len(got) - 1, int(q * len(got)))], 1)

    return {"n": len(got), "mean": round(statistics.mean(got), 1), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(got[-1], 1)}


def ping_rtt(a: BenchNode, b: BenchNode, count: int) -> dict:
    """`ping -i 0.002` round trips (µs, as ping prints them) from A's pod to B's, after 5 to warm up."""
    in_ns(a.resident, "ping", "-n", "-c", "5", "-i", "0.01", "-W", "2", b.resident_ip)
    out = in_ns(a.resident, "ping", "-n", "-c", str(count), "-i", "0.002", "-W", "2", b.resident_ip, check=False).stdout
    rtts = [float(line.split("time=", 1)[1].split()[0]) * 1000 for line in out.splitlines() if "time=" in line]
    if not rtts:
        raise RuntimeError(f"ping from {a.nodename}'s pod to {b.resident_ip} got no reply: {out[-500:]}")
    return {**_percentiles(rtts), "lost": count - len(rtts), "_raw": rtts}


def tcp_rr(a: BenchNode, b: BenchNode, count: int) -> dict:
    """One byte each way over one TCP connection, `count` times after 200 to warm up: the
    request-response round trip in µs (perf_counter in the client, Nagle off on both sides)."""
    server = subprocess.Popen(_in_pod(b.resident, sys.executable, "-I", "-c", _ECHO_SERVER, b.resident_ip, str(ECHO_PORT)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"echo server in {b.nodename}'s pod did not start: {server.stderr.read()[-500:]}")
        proc = subprocess.run(_in_pod(a.resident, sys.executable, "-I", "-c", _ECHO_CLIENT, b.resident_ip, str(ECHO_PORT), str(count)),
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"echo client: {proc.stderr[-500:]}")
        values = [ns / 1000 for ns in json.loads(proc.stdout)]
        return {**_percentiles(values), "_raw": values}
    finally:
        _stop(server)


def data_path(server, mode: str, args, workdir: Path, turn: int) -> dict:
    """Two new nodes in `mode`: the path's device, MTUs, throughput and round trips pod to pod."""
    backend, vxlan_mode = MODES[mode]
    pools(server.endpoint, vxlan_mode)
    cluster = BenchCluster(workdir / f"path-{mode}-{turn}", server.endpoint, str(workdir / "journal"), node_env={"CALICO_NETWORKING_BACKEND": backend})
    try:
        out: dict = {"mode": mode, "round": turn, "backend": backend, "vxlanMode": vxlan_mode, "build": build(cluster, 2, mode)}
        a, b = cluster.nodes
        out["device"] = route_device(a, b.resident_ip)
        expected = DEVICE if mode == "vxlan" else "eth0"
        if out["device"] != expected:
            raise RuntimeError(f"{mode}: node-1 sends to node-2's pod through {out['device']}, not {expected}")
        out["throughput"] = throughput(a, b, args.seconds, args.iperf_reps)
        out["ping_us"] = ping_rtt(a, b, args.pings)
        out["tcp_rr_us"] = tcp_rr(a, b, args.requests)
        return out
    finally:
        left = cluster.remove()
        if left:
            print(f"left running: {left}", file=sys.stderr)


# --- convergence ----------------------------------------------------------------------------------

def new_block(cluster: BenchCluster, reps: int, count: int) -> dict:
    """ADD with IP= in a block nobody holds, on a different node A each time: when every other
    node's kernel routes the block through vxlan.calico via A's tunnel address (route monitors),
    when the affinity was confirmed in etcd, and for `count` observers B (pings from their resident
    pods started before the ADD) when their pings reach A's link encapsulated and when they get
    their first reply."""
    nodes = cluster.nodes
    per_rep, samples = [], []
    affinities = EtcdEvents(cluster.endpoint, "/calico/ipam/v2/host/")
    try:
        for rep in range(reps):
            tunnel = tunnel_address(nodes[rep % len(nodes)])
            with claim_new_block(cluster, affinities, rep, count, POOL_FRESH, VxlanCapture) as c:
                others = [n for n in nodes if n is not c.a]
                routes = []
                for node in others:
                    event = node.monitor.wait(lambda e: e.dst == c.block and not e.deleted and e.gateway == tunnel, c.t0, WAIT)
                    routes.append(event.when - c.t0 if event else None)
                unrouted = [n.nodename for n in others if vxlan_routes(n).get(c.block) != tunnel]
                reply_local = c.local.wait(WAIT)
                claimed = c.claimed - c.t0 if c.claimed else None
                everywhere = None if None in routes or not routes else max(routes)
                per_rep.append({"a": c.a.nodename, "add": c.t1 - c.t0, "claimed": claimed, "route_per_node": routes, "everywhere": everywhere,
                                "claim_to_everywhere": everywhere - claimed if everywhere is not None and claimed is not None else None,
                                "unrouted_after": unrouted, "local": reply_local - c.t0 if reply_local else None})
                for b, pinger in zip(c.watchers, c.pingers):
                    reply = pinger.wait(WAIT)
                    routed = c.capture.wait(b.resident_ip, 2.0 if reply is not None else 0.1)
                    samples.append({"a": c.a.nodename, "b": b.nodename, "routed": routed - c.t0 if routed else None, "reply": reply - c.t0 if reply else None,
                                    "claim_to_routed": routed - c.claimed if routed and c.claimed else None})
    finally:
        affinities.stop()
    return {
        "per_rep": per_rep,
        "samples": samples,
        "add": summary([r["add"] for r in per_rep]),
        "claimed": summary([r["claimed"] for r in per_rep]),
        "route_per_node": summary([v for r in per_rep for v in r["route_per_node"]]),
        "everywhere": summary([r["everywhere"] for r in per_rep]),
        "claim_to_everywhere": summary([r["claim_to_everywhere"] for r in per_rep]),
        "local": summary([r["local"] for r in per_rep]),
        "routed": summary([s["routed"] for s in samples]),
        "claim_to_routed": summary([s["claim_to_routed"] for s in samples]),
        "reply": summary([s["reply"] for s in samples]),
        "unrouted_after": sum(len(r["unrouted_after"]) for r in per_rep),
    }


def convergence(server, size: int, args, workdir: Path) -> dict:
    """A VXLAN cluster of `size` nodes, the new-block measurement, then the cluster removed."""
    pools(server.endpoint, "Always")
    cluster = BenchCluster(workdir / f"vxlan-{size}", server.endpoint, str(workdir / "journal"), node_env={"CALICO_NETWORKING_BACKEND": "vxlan"})
    try:
        out = {"nodes": size, "build": build(cluster, size, "vxlan")}
        pid = server.proc.pid
        time.sleep(3)  # the start's passes are done
        c0 = cpu_sample(cluster.nodes, pid)
        time.sleep(args.idle)
        c1 = cpu_sample(cluster.nodes, pid)
        out["cpu_idle"] = cpu_usage(c0, c1)
        out["new_block"] = new_block(cluster, args.reps, args.observers)
        out["cpu_new_block"] = cpu_usage(c1, cpu_sample(cluster.nodes, pid))
        return out
    finally:
        left = cluster.remove()
        if left:
            print(f"left running: {left}", file=sys.stderr)


# --- the report -----------------------------------------------------------------------------------

def _ms(s: dict) -> str:
    if not s.get("n"):
        return f"- ({s.get('missed', 0)} missed)"
    missed = f", {s['missed']} missed" if s.get("missed") else ""

    def f(v: float) -> str:
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"

    return f"{f(s['median'])} / {f(s['p90'])} / {f(s['max'])} ms ({s['n']}{missed})"


def combine(rounds: list[dict]) -> dict[str, dict]:
    """Per mode, every round's runs together: throughput over all iperf3 runs, round-trip
    percentiles over all samples (the raw samples are dropped from `rounds` here)."""
    out: dict[str, dict] = {}
    for mode in MODES:
        mine = [r for r in rounds if r["mode"] == mode]
        if not mine:
            continue
        runs = [run for r in mine for run in r["throughput"]["runs"]]
        rates = [run["gbit_s"] for run in runs]
        out[mode] = {"mode": mode, "device": mine[0]["device"], "build": mine[0]["build"],
                     "throughput": {"runs": runs, "median_gbit_s": round(statistics.median(rates), 3), "min_gbit_s": min(rates), "max_gbit_s": max(rates)},
                     **{key: _percentiles([v for r in mine for v in r[key].pop("_raw")]) for key in ("ping_us", "tcp_rr_us")}}
    return out


def markdown(results: dict) -> str:
    """The report: the data path side by side, then convergence per size."""
    load = ", ".join(f"{v:.1f}" for v in results["load_before"])
    lines = [f"Encapsulation benchmark run {results['when']} on {results['machine']} (`{results['command']}`; load average before: {load}).", ""]
    paths = results["path"]
    if paths:
        modes = [m for m in ("native", "vxlan") if m in paths]
        lines += ["| pod to pod, node-1 -> node-2 | " + " | ".join(modes) + (" | VXLAN / native |" if len(modes) == 2 else " |"),
                  "|---" * (len(modes) + 1 + (len(modes) == 2)) + "|"]

        def row(label: str, get, fmt, ratio: bool = True) -> None:
            values = [get(paths[m]) for m in modes]
            cells = [fmt(v) for v in values]
            if len(modes) == 2:
                cells.append(f"{values[1] / values[0]:.2f}x" if ratio and values[0] else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

        row("route's device / pod MTU", lambda p: f"{p['device']} / {p['build']['pod_mtu']}", str, ratio=False)
        row("iperf3 TCP, median of runs", lambda p: p["throughput"]["median_gbit_s"], lambda v: f"{v:.2f} Gbit/s")
        row("... slowest / fastest run", lambda p: (p["throughput"]["min_gbit_s"], p["throughput"]["max_gbit_s"]), lambda v: f"{v[0]:.2f} / {v[1]:.2f} Gbit/s", ratio=False)
        row("... retransmits per run, median", lambda p: statistics.median(r["retransmits"] or 0 for r in p["throughput"]["runs"]), lambda v: f"{v:.0f}", ratio=False)
        row("... machine busy while it ran, median", lambda p: statistics.median(r["machine_vcpu"] for r in p["throughput"]["runs"]), lambda v: f"{v:.2f} vCPU", ratio=False)
        for key, label in (("ping_us", "ping round trip"), ("tcp_rr_us", "TCP 1-byte request-response")):
            for q in ("p50", "p90", "p99"):
                row(f"{label} {q}", lambda p, key=key, q=q: p[key][q], lambda v: f"{v:.0f} µs")
    for size in results["sizes"]:
        nb = size["new_block"]
        lines += ["", f"VXLAN convergence, {size['nodes']} nodes (start: every calico-node watching {size['build']['start_s']} s, then every "
                  f"block routed everywhere {size['build']['routed_s']} s; pod MTU {size['build']['pod_mtu']}). median / p90 / max (samples):", "",
                  "| new block | time |", "|---|---|",
                  f"| the ADD on A itself | {_ms(nb['add'])} |",
                  f"| ADD start -> affinity confirmed in etcd | {_ms(nb['claimed'])} |",
                  f"| ADD start -> pod answers A's own namespace | {_ms(nb['local'])} |",
                  f"| ADD start -> a node routes it via vxlan.calico (route monitor, per node) | {_ms(nb['route_per_node'])} |",
                  f"| **ADD start -> every other node routes it via vxlan.calico** | {_ms(nb['everywhere'])} |",
                  f"| **affinity confirmed -> every other node routes it** | {_ms(nb['claim_to_everywhere'])} |",
                  f"| ADD start -> B's pings reach A's link encapsulated (tap) | {_ms(nb['routed'])} |",
                  f"| affinity confirmed -> B's pings reach A encapsulated | {_ms(nb['claim_to_routed'])} |",
                  f"| ADD start -> first reply to a pod on B | {_ms(nb['reply'])} |",
                  f"| routes missing when checked after the monitors | {nb['unrouted_after']} |"]
        for name, label in (("cpu_idle", "idle"), ("cpu_new_block", "new-block phase")):
            c = size[name]
            lines.append(f"| CPU, {label} ({c['seconds']} s): each calico-node mean / max, all of them, etcd, the machine | "
                         f"{c['calico_node']['mean_pct']}% / {c['calico_node']['max_pct']}% of a vCPU, {c['calico_node']['total_vcpu']} vCPU, "
                         f"{c['etcd_vcpu']} vCPU, {c['machine_pct']}% ({c['machine_vcpu']} vCPU) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="3,20", help="convergence cluster sizes, comma separated (each at least 2; empty: none)")
    parser.add_argument("--reps", type=int, default=8, help="new-block repetitions per size")
    parser.add_argument("--observers", type=int, default=4, help="observer nodes pinging per repetition")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one iperf3 run")
    parser.add_argument("--rounds", type=int, default=3, help="data-path rounds: a native and a VXLAN pair of nodes each, alternating")
    parser.add_argument("--iperf-reps", type=int, default=2, help="iperf3 runs per mode and round")
    parser.add_argument("--pings", type=int, default=1000, help="pings per mode and round")
    parser.add_argument("--requests", type=int, default=5000, help="TCP request-responses per mode and round")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle CPU window per size")
    parser.add_argument("--no-path", action="store_true", help="skip the native/VXLAN data path measurement")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",") if s]
    if any(s < 2 for s in sizes):
        parser.error("every size needs at least 2 nodes")
    if os.geteuid() != 0:
        sys.exit("bench.encapsulation: run as root (it creates network namespaces)")
    if subprocess.run(["sh", "-c", "command -v iperf3"], capture_output=True).returncode != 0 and not args.no_path:
        sys.exit("bench.encapsulation: iperf3 is not installed (apt-get install iperf3, or scripts/setup-deps.sh --test)")

    results: dict = {**run_header("bench.encapsulation", argv), "paths": [], "path": {}, "sizes": []}
    try:
        with tempfile.TemporaryDirectory(prefix="calico-bench-encap-") as work, fabric_with_etcd() as server:
            if not args.no_path:
                for turn in range(1, args.rounds + 1):
                    for mode in ("native", "vxlan"):
                        print(f"encapsulation benchmark: data path, round {turn}, {mode}", file=sys.stderr, flush=True)
                        results["paths"].append(data_path(server, mode, args, Path(work), turn))
                results["path"] = combine(results["paths"])
            for size in sizes:
                print(f"encapsulation benchmark: VXLAN convergence, {size} nodes", file=sys.stderr, flush=True)
                results["sizes"].append(convergence(server, size, args, Path(work)))
    except KeyboardInterrupt:
        print("bench.encapsulation: interrupted; everything it made is removed", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError) as exc:  # a cluster that did not come up, a tool that failed
        print(f"bench.encapsulation: {exc}; everything it made is removed (calico-node logs went with it: rerun to look)", file=sys.stderr)
        return 1
    results["load_after"] = os.getloadavg()
    write_results(args.out, "encapsulation", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
