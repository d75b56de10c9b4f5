"""Pods through calico-node as users run it (issue 19): routing (BIRD) and network policy on, next
to Debian's Go `ptp` + `host-local` in the same node namespace, in one run.

    .venv/bin/python -m bench.node_pods [--pods 40] [--bursts 50,100] [--policy-pods 20]
                                        [--profile-pods 10] [--idle 10] [--out bench/results]

Run as root. One node namespace on the routing benchmark's fabric (bench/routing_support.py: etcd on
198.19.0.1, everything removed on exit, Ctrl-C and SIGTERM included) with a real calico-node
enforcing policy; every pod a fresh namespace; our plugins exec'd through the launchers
install-cni.sh installs. Measured:

1. VERSION, ADD, CHECK and DEL one at a time (`--pods` pods), ours through calico-node and the
   reference; each invocation's wall time measured outside it (bench/plugins.py);
2. bursts: `--bursts` ADDs started at once, then as many DELs, for both;
3. ADD and DEL with 100 GlobalNetworkPolicies (50 of them selecting the new pods) and 50 other
   endpoints on the node (`--policy-pods` pods; the reference enforces no policy);
4. calico-node's memory (VmRSS, VmHWM) and CPU: idle (over `--idle` s) and during the 100-burst;
5. a restart: calico-node stopped and started again while a runtime retries an ADD every 20 ms
   (each answered 11 until it serves): how long pods could not start;
6. where an ADD and a DEL spend their time, without and with the 100 policies: calico-node
   restarted with CALICO_CNI_TIMING=1 reports each request's phases (etcd, netlink, nft, conntrack,
   policy, journal, ...) and etcd calls; next to the wall time, an empty interpreter's start and
   VERSION through calico-node (the exec'd client alone).

Writes node_pods.md and node_pods.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench.env import run_header, write_results
from bench.plugins import PluginSet, _env, burst, latency, run_timed
from bench.policy import NETWORK, Bench, cpu_seconds, idle_cpu, memory, policy, quiet
from bench.routing_support import BenchCluster, cluster_with_pool, fabric_with_etcd, wait_for

POOL = "198.18.0.0/18"
REFERENCE_DIR = "/usr/lib/cni"
OURS = "ours + calico-node"
REFERENCE = "ptp+host-local"
WAIT = 120.0


def plugin_sets(cluster: BenchCluster, node, workdir: Path) -> list[PluginSet]:
    """Ours through the node's calico-node, and the reference (ptp + host-local)."""
    from tests.conftest import BIN_DIR

    ours = cluster.conf(node, [POOL])
    reference = {
        "cniVersion": "1.0.0",
        "name": "bench-ref",
        "type": "ptp",
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.128.0/17"}]], "dataDir": str(workdir / "host-local")},
    }
    return [
        PluginSet(OURS, ours, f"{BIN_DIR}:{REFERENCE_DIR}", {"CALICO_CNI_AGENT_SOCKET": node.socket}),
        PluginSet(REFERENCE, reference, REFERENCE_DIR),
    ]


def in_node(node) -> SimpleNamespace:
    """What bench/plugins.py needs of a node: the name of its namespace."""
    return SimpleNamespace(name=node.ns)


def loaded_policy(bench: Bench) -> None:
    """100 GlobalNetworkPolicies, half of them selecting the benchmark's pods (label `net1`), and 50
    other endpoints on the node, written and programmed."""
    bench.local_endpoints("p", 50, lambda i: {"app": f"a{i % 10}", "role": f"r{i % 5}"})
    policies = []
    for i in range(100):
        selector = f"has({NETWORK})" if i % 2 else f'app == "a{i % 10}"'
        policies.append(policy(f"load-{i}", selector, f'role == "r{i % 5}"', 1000 + i))
    bench.write(policies)
    quiet(bench.node.proc.pid, window=2.0)


def restart_window(cluster: BenchCluster, node, ps: PluginSet, env: dict[str, str]) -> dict:
    """Stop calico-node and start it again (with `env` added) while a runtime retries an ADD every
    20 ms: seconds from the stop and from the start to the first ADD that succeeds."""
    from tests.clients.harness import create_netns

    pod = create_netns("benchrestart")
    node.pods.append(os.path.basename(pod))
    attempts = 0
    stopped = time.monotonic()
    node.stop()
    node.extra_env.update(env)
    started = time.monotonic()
    node.launch()
    while True:
        attempts += 1
        timed = run_timed(["nsenter", f"--net=/var/run/netns/{node.ns}", ps.binary], _env(ps, "ADD", "bench-restart", pod), json.dumps(ps.conf).encode())
        if timed.rc == 0:
            break
        if time.monotonic() - started > WAIT:
            raise RuntimeError(f"no ADD succeeded within {WAIT:g} s of calico-node's start: {timed.stdout[:300]}")
        time.sleep(0.02)
    done = time.monotonic()
    wait_for("calico-node to register and watch", node.watching, WAIT, 0.1)
    return {"from_stop_s": round(done - stopped, 2), "from_start_s": round(done - started, 2), "attempts": attempts}


def profile(ps: PluginSet, node, pods: int) -> dict:
    """Per ADD and DEL: the wall time and calico-node's report of the request (its phases and etcd
    calls; calico-node runs with CALICO_CNI_TIMING=1); an empty interpreter's start and VERSION
    through calico-node (the exec'd client alone), medians."""
    from bench.plugins import _InNode
    from tests.clients.harness import create_netns, remove_netns

    out: dict = {
        "pods": pods,
        "interpreter_start_ms": round(statistics.median(run_timed([sys.executable, "-I", "-S", "-c", "pass"], {}, b"").seconds for _ in range(20)) * 1000, 2),
    }
    samples: dict[str, list[dict]] = {"VERSION": [], "ADD": [], "DEL": []}
    for i in range(pods):
        pod = create_netns("benchprofile")
        try:
            with _InNode(in_node(node)):
                for command in ("VERSION", "ADD", "DEL"):
                    timed = run_timed([ps.binary], _env(ps, command, f"bench-profile-{i}", pod), json.dumps(ps.conf).encode())
                    if timed.rc != 0:
                        raise RuntimeError(f"{command} failed: {timed.stdout[:300]} {timed.stderr[-300:]}")
                    report = [json.loads(line.split(" ", 2)[2]) for line in timed.stderr.splitlines() if line.startswith("calico-cni timing ")]
                    samples[command].append({"wall_ms": timed.seconds * 1000, **(report[0] if report else {})})
        finally:
            remove_netns(os.path.basename(pod))
    for command, rows in samples.items():
        keys = sorted({k for row in rows for k in row if k.endswith(("_ms", "_calls"))})
        out[command] = {k: round(statistics.median(row.get(k, 0.0) for row in rows), 2) for k in keys}
    return out


def run(server, args, workdir: Path) -> dict:
    cluster = cluster_with_pool(server.endpoint, workdir, "nbench0", POOL)
    results: dict = {}
    try:
        cluster.add_nodes(1)
        node = cluster.nodes[0]
        wait_for("policy enforced", (node.run_dir / "policy-enforced").exists, WAIT, 0.05)
        sets = plugin_sets(cluster, node, workdir)
        ours, reference = sets
        # The first ADD creates the network's profile and claims a block: not what is measured.
        latency(ours, in_node(node), 1)
        quiet(node.proc.pid)
        results["idle_memory_mb"] = memory(node.proc.pid)
        results["idle_cpu_pct"] = idle_cpu(node.proc.pid, args.idle)
        results["latency"] = {}
        for ps in sets:
            print(f"latency: {ps.label} ({args.pods} pods)", file=sys.stderr, flush=True)
            results["latency"][ps.label] = latency(ps, in_node(node), args.pods)
        results["bursts"] = {}
        for size in (int(s) for s in args.bursts.split(",") if s):
            results["bursts"][size] = {}
            for ps in sets:
                print(f"burst: {ps.label} x {size}", file=sys.stderr, flush=True)
                quiet(node.proc.pid)
                before, began = cpu_seconds(node.proc.pid), time.monotonic()
                results["bursts"][size][ps.label] = burst(ps, in_node(node), size)
                if ps is ours:
                    results["bursts"][size]["daemon_cpu_pct"] = round((cpu_seconds(node.proc.pid) - before) / (time.monotonic() - began) * 100, 1)
                    results["bursts"][size]["daemon_memory_mb"] = memory(node.proc.pid)
        print("restart", file=sys.stderr, flush=True)
        quiet(node.proc.pid)
        results["restart"] = restart_window(cluster, node, ours, {"CALICO_CNI_TIMING": "1"})
        quiet(node.proc.pid)
        print(f"profile ({args.profile_pods} pods)", file=sys.stderr, flush=True)
        results["profile"] = profile(ours, node, args.profile_pods)
        print(f"ADD with 100 policies and 50 endpoints ({args.policy_pods} pods)", file=sys.stderr, flush=True)
        bench = Bench(cluster, server.endpoint)
        try:
            loaded_policy(bench)
            results["policy"] = latency(ours, in_node(node), args.policy_pods)
            results["policy"]["memory_mb"] = memory(node.proc.pid)
            results["policy_profile"] = profile(ours, node, args.profile_pods)
            bench.clear()
        finally:
            bench.close()
    finally:
        left = cluster.remove()
        if left:
            print(f"left running: {left}", file=sys.stderr)
    return results


def _ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.2f}x" if ref else "-"


def markdown(results: dict) -> str:
    """The report: each measure of ours next to the reference's, and the ratio."""
    lat = results["latency"]
    lines = [
        f"Pods through calico-node, run {results['when']} on {results['machine']} (`{results['command']}`, load before "
        f"{', '.join(f'{x:.1f}' for x in results['load_before'])}).",
        "",
        f"| verb | {OURS}: median (p90, p99) | {REFERENCE}: median (p90, p99) | ratio of medians (p99) |",
        "|---|---|---|---|",
    ]
    for verb in ("VERSION", "ADD", "CHECK", "DEL"):
        o, r = lat[OURS][verb], lat[REFERENCE][verb]
        lines.append(
            f"| {verb} | {o['median']} ms ({o['p90']}, {o['p99']}) | {r['median']} ms ({r['p90']}, {r['p99']}) | {_ratio(o['median'], r['median'])} ({_ratio(o['p99'], r['p99'])}) |"
        )
    p = results.get("policy")
    if p:
        for verb in ("ADD", "DEL"):
            r = lat[REFERENCE][verb]
            lines.append(
                f"| {verb}, 100 policies + 50 endpoints | {p[verb]['median']} ms ({p[verb]['p90']}, {p[verb]['p99']}) | {r['median']} ms (no policy) | "
                f"{_ratio(p[verb]['median'], r['median'])} ({_ratio(p[verb]['p99'], r['p99'])}) |"
            )
    lines += ["", f"| burst, all done (p99 per call) | {OURS} | {REFERENCE} | ratio | calico-node CPU during it, memory after |", "|---|---|---|---|---|"]
    for size, data in results["bursts"].items():
        for verb in ("ADD", "DEL"):
            o, r = data[OURS][verb], data[REFERENCE][verb]
            extra = f"{data['daemon_cpu_pct']}% of a vCPU (ADDs and DELs), VmRSS {data['daemon_memory_mb']['VmRSS']} MB" if verb == "ADD" else ""
            lines.append(
                f"| {size} x {verb} | {o['total_ms'] / 1000:.2f} s ({o['p99']} ms) | {r['total_ms'] / 1000:.2f} s ({r['p99']} ms) | {_ratio(o['total_ms'], r['total_ms'])} | {extra} |"
            )
    m, rs = results["idle_memory_mb"], results["restart"]
    lines += [
        "",
        f"calico-node idle: VmRSS {m['VmRSS']} MB (peak {m['VmHWM']}), {results['idle_cpu_pct']}% of a vCPU. "
        f"Peak RSS of one exec'd invocation: ours {lat[OURS]['peak_rss_mb']} MB (the thin client), reference {lat[REFERENCE]['peak_rss_mb']} MB.",
        "",
        f"Restart: a runtime retrying an ADD every 20 ms got its pod {rs['from_start_s']} s after calico-node started again "
        f"({rs['from_stop_s']} s after it was stopped; {rs['attempts']} attempts, each answered 11 until then).",
    ]
    prof, loaded = results["profile"], results.get("policy_profile") or {}
    rows = [(verb, prof[verb]) for verb in ("VERSION", "ADD", "DEL")] + [(f"{verb}, 100 policies", loaded[verb]) for verb in ("ADD", "DEL") if verb in loaded]
    lines += [
        "",
        f"Where the time goes (medians of {prof['pods']} pods, ms; an empty `python -I -S` starts and exits in {prof['interpreter_start_ms']} ms):",
        "",
    ]
    keys = sorted({k for _, row in rows for k in row})
    lines += [f"| phase | {' | '.join(keys)} |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | {' | '.join(str(row.get(k, '-')) for k in keys)} |" for name, row in rows]
    lines += [
        "",
        "wall = measured outside the exec'd plugin; daemon = the request in calico-node; etcd, netlink, nft, conntrack, journal = time in those "
        "calls (policy contains policy_lock, render, nft_write and conntrack; nft_write contains nft); _calls = how many.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=40)
    parser.add_argument("--bursts", default="50,100")
    parser.add_argument("--policy-pods", type=int, default=20)
    parser.add_argument("--profile-pods", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench.node_pods: run as root (it creates network namespaces)")
    results = run_header("bench.node_pods", argv)
    with fabric_with_etcd() as server, tempfile.TemporaryDirectory(prefix="calico-bench-node-pods-") as work:
        results.update(run(server, args, Path(work)))
    write_results(args.out, "node_pods", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
