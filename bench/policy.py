"""Network policy benchmark: how fast one calico-node programs policy, at what cost to an ADD, and
its memory.

    .venv/bin/python -m bench.policy [--sizes 10,100,1000] [--reps 3] [--policies 1000] [--local 200]
                                     [--remote 800] [--adds 10] [--out bench/results]

Run as root. One node namespace with a real calico-node (BIRD, IPv4 only) on the routing
benchmark's fabric (bench/routing_support.py: etcd on 198.19.0.1, everything removed on exit,
Ctrl-C and SIGTERM included). Workload endpoints other than the ADDs' pods are written straight to
etcd, as calicoctl stores them, with interfaces that do not exist: calico-node programs their
chains and dispatch entries regardless. Policies are GlobalNetworkPolicies.

"Enforced" here is the kernel's state, not a probe: the policy's chain (`pi-<id>`) appearing in
`ip calico`, seen by `nft monitor chains` in the node's namespace (the event is sent when the
transaction commits, and each pass writes a family's table in one transaction), then checked with
one `nft list table`: every endpoint chain the policy applies to jumps to it. Measured:

1. apply -> enforced: `calicoctl apply` of one policy selecting N local endpoints (each size on
   its own, the endpoints written and programmed beforehand), from the command's return (and its
   start) to the chain committed;
2. resync: calico-node started with `--policies` policies, `--local` local and `--remote` remote
   endpoints in etcd (its previous tables and marker removed, as after a reboot), from its start to
   the marker `<run dir>/policy-enforced` (written once the first full programming is in the
   kernel); then one more policy applied at that scale, timed as in 1;
3. ADD's policy cost: `--adds` ADDs through calico-node (exec'd `calico` plugin, a new pod
   namespace each) with no policy, then with 100 policies (half of them applying to the new pods)
   and 50 other endpoints on the node: the difference is what the policy pass in the ADD costs;
4. calico-node's memory (VmRSS, and VmHWM its peak) idle with no policy, and after the resync.

Writes policy.md and policy.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.env import run_header, write_results
from bench.routing_support import BenchCluster, BenchNode, EtcdEvents, cluster_with_pool, fabric_with_etcd, wait_for

POOL = "198.18.0.0/20"  # the ADDs' pods
LOCAL_NET = 0xC6128000  # 198.18.128.0: endpoints written to etcd, local ones
REMOTE_NET = 0xC612C000  # 198.18.192.0: remote ones
NAMESPACE = "bench"
PROFILE_NAME = "kns.bench"
NETWORK = "net1"  # the ADDs' network: their pods carry the label `net1: ""`
WAIT = 120.0  # seconds any one programming is waited for
FELIX = {
    "apply": "usually seconds; a new pod's traffic dropped 1-6 s until programmed (#2471), up to 2 min (#6941, #9706)",
    "resync": "minutes at about 12,000 policies (felix#2032) or 1,500 pods per node (#7085)",
    "add": "none in the ADD: the pod starts before Felix programs it (1-6 s of drops, #2471)",
    "memory": "no figure in the reference",
}


# --- records --------------------------------------------------------------------------------------


def _address(base: int, index: int) -> str:
    return f"{base >> 24 & 255}.{base >> 16 & 255}.{(base >> 8 & 255) + (index >> 8)}.{index & 255}"


def endpoint(node: str, name: str, interface: str, address: str, labels: dict[str, str]) -> tuple[str, bytes]:
    """(key, value) of a workload endpoint as calicoctl stores it, naming the bench profile."""
    from tests.policy_support import wep

    key, kv = wep(name, NAMESPACE, labels=labels, profiles=[PROFILE_NAME], node=node, interfaceName=interface, ipNetworks=[f"{address}/32"])
    return key, kv.value


def policy(name: str, selector: str, peer: str, port: int) -> tuple[str, bytes]:
    """(key, value) of a GlobalNetworkPolicy: ingress TCP `port` from `peer`, egress to `peer`."""
    from tests.policy_support import stored

    spec = {
        "selector": selector,
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": peer}, "destination": {"ports": [port]}}],
        "egress": [{"action": "Allow", "destination": {"selector": peer}}],
        "types": ["Ingress", "Egress"],
    }
    key, kv = stored("GlobalNetworkPolicy", name, spec)
    return key, kv.value


def policy_document(name: str, selector: str, peer: str, port: int) -> dict:
    """The same policy as a user's file for calicoctl."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "selector": selector,
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": peer}, "destination": {"ports": [port]}}],
            "egress": [{"action": "Allow", "destination": {"selector": peer}}],
        },
    }


def ingress_chain(name: str) -> str:
    """The chain calico-node gives the ingress rules of GlobalNetworkPolicy `name` (default tier)."""
    from calico_cni.node.nft_policy import policy_chain
    from calico_cni.node.policy_model import INGRESS, read_record

    key, value = policy(name, "all()", "all()", 1)
    record = read_record(key, _Stored(value))
    return policy_chain(record, INGRESS)


class _Stored:
    def __init__(self, value: bytes) -> None:
        self.value, self.mod_revision = value, 1


class Etcd:
    """Bulk writes and deletes (100 operations per transaction, etcd's default limit is 128)."""

    def __init__(self, endpoint: str) -> None:
        from calico_cni.config import EtcdSettings
        from calico_cni.datastore.etcd import EtcdClient

        self.client = EtcdClient(EtcdSettings((endpoint,)))

    def put(self, items: list[tuple[str, bytes]]) -> None:
        for i in range(0, len(items), 100):
            ok, _ = self.client.commit([], puts=items[i : i + 100])
            assert ok

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 100):
            self.client.commit([], deletes=keys[i : i + 100])

    def close(self) -> None:
        self.client.close()


# --- the node's kernel state ----------------------------------------------------------------------


def nft(node: BenchNode, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["nsenter", f"--net=/var/run/netns/{node.ns}", "nft", *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class ChainMonitor:
    """`nft monitor chains` in the node's namespace: the arrival time of each chain added to `ip calico`."""

    def __init__(self, node: BenchNode) -> None:
        self.added: dict[str, float] = {}
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{node.ns}", "stdbuf", "-oL", "nft", "monitor", "chains"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            m = re.match(r"^add chain ip calico (\S+)", line)
            if m:
                with self._cond:
                    self.added.setdefault(m.group(1), time.time())
                    self._cond.notify_all()

    def wait(self, chain: str, timeout: float = WAIT) -> float | None:
        """When `chain` was added (unix time), waiting up to `timeout` s; None if it was not."""
        with self._cond:
            self._cond.wait_for(lambda: chain in self.added, timeout)
            return self.added.get(chain)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def jumping_to(node: BenchNode, chain: str) -> int:
    """How many endpoint ingress chains (`tw-*`) of `ip calico` jump to `chain`."""
    count = 0
    for block in nft(node, "list", "table", "ip", "calico").split("\n\tchain ")[1:]:
        if block.startswith("tw-") and re.search(rf"jump {re.escape(chain)}\b", block):
            count += 1
    return count


def memory(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(status[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def cpu_seconds(pid: int) -> float:
    """CPU a process used so far, with its waited-for children's (calico-node's nft execs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def quiet(pid: int, window: float = 1.0, timeout: float = 60.0) -> float:
    """Wait until the process (with its children) used under 2% of a vCPU for `window` s, so a
    change starts on a node at rest; the seconds waited."""
    began = time.monotonic()
    mark, since = cpu_seconds(pid), began
    while time.monotonic() - began < timeout:
        time.sleep(0.1)
        now, used = time.monotonic(), cpu_seconds(pid)
        if used - mark > 0.02 * max(now - since, 0.5):
            mark, since = used, now
        elif now - since >= window:
            break
    return time.monotonic() - began


def idle_cpu(pid: int, seconds: float) -> float:
    """The share of a vCPU the process (with its children) used over `seconds` with nothing changing, in percent."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - before) / seconds * 100, 1)


def summary(values: list[float]) -> dict:
    """n, median, min and max in ms."""
    got = sorted(values)
    if not got:
        return {"n": 0}
    return {"n": len(got), "median": round(statistics.median(got) * 1000, 1), "min": round(got[0] * 1000, 1), "max": round(got[-1] * 1000, 1)}


# --- the measurements -----------------------------------------------------------------------------


class Bench:
    """One node and its calico-node; the records written to etcd, to be removed between phases."""

    def __init__(self, cluster: BenchCluster, endpoint: str) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.etcd = Etcd(endpoint)
        self.node = cluster.nodes[0]
        self.written: list[str] = []
        # Policy writes as an etcd watcher sees them: when calicoctl's write reached etcd.
        self.writes = EtcdEvents(endpoint, "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/")

    def write(self, items: list[tuple[str, bytes]]) -> None:
        self.etcd.put(items)
        self.written += [k for k, _ in items]

    def close(self) -> None:
        self.writes.stop()
        self.etcd.close()

    def clear(self) -> None:
        """Remove every endpoint and policy written or applied so far (the ADDs' endpoints too)."""
        self.etcd.delete(list(dict.fromkeys(self.written)))
        self.written = []
        keys = [kv.key for kv in self.etcd.client.get_prefix("/calico/resources/v3/projectcalico.org/workloadendpoints/", keys_only=True)]
        keys += [kv.key for kv in self.etcd.client.get_prefix("/calico/resources/v3/projectcalico.org/globalnetworkpolicies/", keys_only=True)]
        self.etcd.delete(keys)

    def local_endpoints(self, tag: str, count: int, labels) -> list[str]:
        """`count` local endpoints (labels(i)); written, and waited for until programmed. Their interfaces."""
        items, interfaces = [], []
        for i in range(count):
            interface = f"cali{tag}x{i}"
            interfaces.append(interface)
            items.append(endpoint(self.node.nodename, f"{tag}-{i}", interface, _address(LOCAL_NET, i), labels(i)))
        self.write(items)
        if interfaces:
            wait_for(
                f"the chains of {interfaces[-1]}", lambda: nft(self.node, "list", "chain", "ip", "calico", f"tw-{interfaces[-1]}", check=False), WAIT, 0.05
            )
        return interfaces

    def apply(self, name: str, selector: str, expected: int, monitor: ChainMonitor) -> dict:
        """`calicoctl apply` of one policy selecting `expected` local endpoints; its timings."""
        from tests.conftest import plugin_path

        path = Path(self.cluster.directory) / f"{name}.json"
        path.write_text(json.dumps(policy_document(name, selector, 'role == "client"', 80)))
        chain = ingress_chain(name)
        waited = quiet(self.node.proc.pid)  # the previous change's passes are over
        t0 = time.time()
        proc = subprocess.run(
            [plugin_path("calicoctl"), "apply", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"ETCD_ENDPOINTS": self.endpoint, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        t1 = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"calicoctl apply: {proc.stdout} {proc.stderr}")
        key = policy(name, selector, "all()", 1)[0]
        written = self.writes.wait(lambda op, k, v: op == "PUT" and k == key, WAIT)
        seen = monitor.wait(chain)
        if seen is None or written is None:
            raise RuntimeError(f"{chain} not programmed (or {key} not seen written) within {WAIT:g} s")
        jumping = jumping_to(self.node, chain)
        return {
            "calicoctl_s": t1 - t0,
            "after_return_s": seen - t1,
            "after_start_s": seen - t0,
            "after_write_s": seen - written,
            "write_after_start_s": written - t0,
            "endpoints_jumping": jumping,
            "expected": expected,
            "waited_quiet_s": round(waited, 2),
        }

    def add_pods(self, count: int) -> list[float]:
        """`count` ADDs through calico-node (one not counted first: the process's first ADD)."""
        took = []
        for i in range(count + 1):
            _pod, _ip, seconds = self.cluster.add_pod(self.node, [POOL])
            if i:
                took.append(seconds)
        return took


def apply_to_endpoints(bench: Bench, sizes: list[int], reps: int, idle: float) -> list[dict]:
    """Case 1: per size, N local endpoints, then `reps` policies applied one after the other."""
    out = []
    monitor = ChainMonitor(bench.node)
    try:
        for size in sizes:
            print(f"  apply: {size} endpoints", file=sys.stderr, flush=True)
            tag = f"n{size}"
            began = time.monotonic()
            bench.local_endpoints(tag, size, lambda i, tag=tag: {"bench": tag, "role": "server"})
            programmed = time.monotonic() - began
            samples = [bench.apply(f"bench-{tag}-r{r}", f'bench == "{tag}"', size, monitor) for r in range(reps)]
            quiet(bench.node.proc.pid)
            idle_pct = idle_cpu(bench.node.proc.pid, idle)
            out.append(
                {
                    "endpoints": size,
                    "endpoints_programmed_s": round(programmed, 2),
                    "samples": samples,
                    "after_return": summary([s["after_return_s"] for s in samples]),
                    "after_start": summary([s["after_start_s"] for s in samples]),
                    "after_write": summary([s["after_write_s"] for s in samples]),
                    "calicoctl": summary([s["calicoctl_s"] for s in samples]),
                    "all_jumping": all(s["endpoints_jumping"] == size for s in samples),
                    "idle_cpu_pct": idle_pct,
                }
            )
            bench.clear()
            time.sleep(1)
    finally:
        monitor.stop()
    return out


def add_cost(bench: Bench, adds: int) -> dict:
    """Case 3: ADDs with no policy, then with 100 policies and 50 more endpoints on the node."""
    print("  ADD with no policy", file=sys.stderr, flush=True)
    bare = bench.add_pods(adds)
    bench.local_endpoints("a", 50, lambda i: {"app": f"a{i % 10}", "role": f"r{i % 5}"})
    policies = []
    for i in range(100):
        selector = f"has({NETWORK})" if i % 2 else f'app == "a{i % 10}"'
        policies.append(policy(f"add-{i}", selector, f'role == "r{i % 5}"', 1000 + i))
    bench.write(policies)
    monitor = ChainMonitor(bench.node)
    try:
        # The policies applying to the endpoints written are programmed (those for the pods wait for a pod).
        if monitor.wait(ingress_chain("add-98"), WAIT) is None and not nft(bench.node, "list", "chain", "ip", "calico", ingress_chain("add-98"), check=False):
            raise RuntimeError("the ADD phase's policies were not programmed")
    finally:
        monitor.stop()
    time.sleep(1)
    print("  ADD with 100 policies, 50 endpoints", file=sys.stderr, flush=True)
    loaded = bench.add_pods(adds)
    bench.clear()
    time.sleep(1)
    return {
        "bare": summary(bare),
        "loaded": summary(loaded),
        "policy_cost_ms": round((statistics.median(loaded) - statistics.median(bare)) * 1000, 1) if bare and loaded else None,
    }


def resync(bench: Bench, policies: int, local: int, remote: int, reps: int, adds: int, idle: float) -> dict:
    """Case 2: calico-node restarted on `policies` policies and `local` + `remote` endpoints."""
    print(f"  resync: {policies} policies, {local} local and {remote} remote endpoints", file=sys.stderr, flush=True)
    node = bench.node
    node.stop()
    groups = max(1, min(50, policies))
    items = [policy(f"pol-{i}", f'app == "a{i % groups}"', f'role == "r{i % 20}"', 1000 + i % 60000) for i in range(policies)]
    items += [endpoint(node.nodename, f"l-{i}", f"calil{i}", _address(LOCAL_NET, i), {"app": f"a{i % groups}", "role": f"r{i % 20}"}) for i in range(local)]
    items += [
        endpoint(f"remote-{i % 10}", f"r-{i}", f"calir{i}", _address(REMOTE_NET, i), {"app": f"a{i % groups}", "role": f"r{i % 20}"}) for i in range(remote)
    ]
    bench.write(items)
    for family in ("ip", "ip6"):
        nft(node, "delete", "table", family, "calico", check=False)
    marker = node.run_dir / "policy-enforced"
    marker.unlink(missing_ok=True)
    t0 = time.monotonic()
    node.launch()
    wait_for(f"{marker}", marker.exists, WAIT, 0.01)
    started = time.monotonic() - t0
    cpu = cpu_seconds(node.proc.pid)
    counted = {"policy_chains": 0, "endpoint_chains": 0}
    for line in nft(node, "list", "table", "ip", "calico").splitlines():
        if not line.startswith("\tchain "):
            continue
        name = line.split()[1]
        counted["policy_chains"] += name.startswith(("pi-default.pol-", "po-default.pol-"))
        counted["endpoint_chains"] += name.startswith(("tw-calil", "fw-calil"))
    time.sleep(2)
    mem = memory(node.proc.pid)
    monitor = ChainMonitor(node)
    try:
        samples = [
            bench.apply(f"more-{r}", f'app == "a{r % groups}"', len([i for i in range(local) if i % groups == r % groups]), monitor) for r in range(reps)
        ]
    finally:
        monitor.stop()
    quiet(node.proc.pid)
    idle_pct = idle_cpu(node.proc.pid, idle)
    added = bench.add_pods(adds)
    return {
        "policies": policies,
        "idle_cpu_pct": idle_pct,
        "add": summary(added),
        "local": local,
        "remote": remote,
        "start_to_enforced_s": round(started, 2),
        "cpu_s_to_enforced": round(cpu, 2),
        "chains": counted,
        "memory_mb": mem,
        "one_more": samples,
        "one_more_after_return": summary([s["after_return_s"] for s in samples]),
        "one_more_after_write": summary([s["after_write_s"] for s in samples]),
        "one_more_all_jumping": all(s["endpoints_jumping"] == s["expected"] for s in samples),
    }


def run(server, args, workdir: Path) -> dict:
    from tests.policy_support import stored

    cluster = cluster_with_pool(server.endpoint, workdir, "pbench0", POOL)
    results: dict = {}
    try:
        key, kv = stored("Profile", PROFILE_NAME, {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]})
        etcd = Etcd(server.endpoint)
        etcd.put([(key, kv.value)])
        etcd.close()
        cluster.add_nodes(1)
        bench = Bench(cluster, server.endpoint)
        node = bench.node
        wait_for("policy enforced", (node.run_dir / "policy-enforced").exists, WAIT, 0.05)
        time.sleep(3)
        results["enforcement"] = "policy chain committed (nft monitor) and every endpoint chain jumping to it (nft list); no probe"
        try:
            results["idle_memory_mb"] = memory(node.proc.pid)
            results["idle_cpu_pct"] = idle_cpu(node.proc.pid, args.idle)
            results["apply"] = apply_to_endpoints(bench, args.sizes, args.reps, args.idle)
            results["add"] = add_cost(bench, args.adds)
            results["resync"] = resync(bench, args.policies, args.local, args.remote, args.reps, args.adds, args.idle)
        finally:
            bench.close()
    finally:
        left = cluster.remove()
        if left:
            print(f"left running: {left}", file=sys.stderr)
    return results


def _ms(s: dict) -> str:
    return "-" if not s.get("n") else f"{s['median']:.0f} ms ({s['min']:.0f}-{s['max']:.0f}, n={s['n']})"


def markdown(results: dict) -> str:
    """The report, each measure beside Felix's figure from the reference."""
    lines = [
        f"Policy benchmark run {results['when']} on {results['machine']} (`{results['command']}`).",
        f"Enforced = {results['enforcement']}.",
        "",
        "| measure | ours: median (min-max, n) | Felix (reference) |",
        "|---|---|---|",
    ]
    for a in results["apply"]:
        ok = "" if a["all_jumping"] else " (NOT every endpoint jumping)"
        lines.append(f"| **1 policy on {a['endpoints']} endpoints: the write in etcd -> enforced**{ok} | {_ms(a['after_write'])} | {FELIX['apply']} |")
        lines.append(
            f"| ... from `calicoctl apply`'s start / from its return (calicoctl's run: {_ms(a['calicoctl'])}) | "
            f"{_ms(a['after_start'])} / {_ms(a['after_return'])} | - |"
        )
    r = results["resync"]
    lines.append(
        f"| **resync: calico-node start -> enforced, {r['policies']} policies, {r['local']} local + {r['remote']} remote endpoints** | "
        f"{r['start_to_enforced_s']} s ({r['cpu_s_to_enforced']} s of CPU) | {FELIX['resync']} |"
    )
    ok = "" if r["one_more_all_jumping"] else " (NOT every endpoint jumping)"
    lines.append(
        f"| one more policy at that scale: the write -> enforced{ok} (from calicoctl's return: {_ms(r['one_more_after_return'])}) | "
        f"{_ms(r['one_more_after_write'])} | {FELIX['apply']} |"
    )
    lines.append(f"| ADD through calico-node at the resync's scale (pods no policy selects) | {_ms(r['add'])} | - |")
    a = results["add"]
    lines.append(f"| ADD through calico-node, no policy | {_ms(a['bare'])} | - |")
    lines.append(f"| ADD through calico-node, 100 policies (50 applying to the pod), 50 endpoints | {_ms(a['loaded'])} | - |")
    lines.append(f"| **ADD's policy cost (difference of medians)** | {a['policy_cost_ms']} ms | {FELIX['add']} |")
    idle, after = results["idle_memory_mb"], r["memory_mb"]
    lines.append(f"| calico-node memory idle, no policy: VmRSS (VmHWM) | {idle['VmRSS']} MB ({idle['VmHWM']} MB) | {FELIX['memory']} |")
    lines.append(f"| calico-node memory after the resync: VmRSS (VmHWM) | {after['VmRSS']} MB ({after['VmHWM']} MB) | {FELIX['memory']} |")
    cpu = [f"nothing: {results['idle_cpu_pct']}%"] + [f"{x['endpoints']} endpoints: {x['idle_cpu_pct']}%" for x in results["apply"]]
    cpu.append(f"the resync's scale: {r['idle_cpu_pct']}%")
    lines.append(f"| calico-node idle CPU (with its nft execs), share of a vCPU | {'; '.join(cpu)} | - |")
    lines += [
        "",
        f"Resync programmed {r['chains']['policy_chains']} policy chains and {r['chains']['endpoint_chains']} local endpoint chains.",
        "Endpoints other than the ADDs' pods are written straight to etcd with interfaces that do not exist.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="local endpoints one policy applies to, comma separated")
    parser.add_argument("--reps", type=int, default=3, help="policies applied per size (and at the resync's scale)")
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--local", type=int, default=200, help="local endpoints at the resync")
    parser.add_argument("--remote", type=int, default=800, help="remote endpoints at the resync")
    parser.add_argument("--adds", type=int, default=10, help="ADDs timed with and without policy (and at the resync's scale)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds calico-node's idle CPU is measured over, per scale")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if os.geteuid() != 0:
        sys.exit("bench.policy: run as root (it creates network namespaces)")
    results: dict = run_header("bench.policy", argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="calico-bench-policy-") as work, fabric_with_etcd() as server:
        results.update(run(server, args, Path(work)))
    results["seconds"] = round(time.monotonic() - began, 1)
    write_results(args.out, "policy", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
