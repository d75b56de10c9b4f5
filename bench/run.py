"""One command for every benchmark: ours next to Debian's Go ptp + host-local, in one run.

    sudo .venv/bin/python -m bench.run [--pods 50] [--bursts 50,100] [--nodes 50 --per-node 40]
                                       [--out bench/results]

Writes results.md (a Markdown table) and results.json to --out. Run as root: it creates its own
namespaces (a fabric with etcd, a node, one namespace per pod) and removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ipam
from bench.agent import agent_in
from bench.env import fabric_with_etcd
from bench.plugins import PluginSet, burst, latency, phases
from tests.clients.harness import create_node, delete_node

AGENT_LABEL = "ours + agent"
OURS = ("ours", AGENT_LABEL)
SETS = (*OURS, "reference")  # the plugin sets measured, in table order
REFERENCE_DIR = "/usr/lib/cni"


def plugin_sets(etcd_endpoint: str, workdir: str) -> list[PluginSet]:
    ours = {
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": "calico",
        "etcd_endpoints": etcd_endpoint,
        "nodename": "bench-node",
        "log_level": "warning",
        "log_file_path": f"{workdir}/calico.log",
        "release_journal_dir": f"{workdir}/journal",
        "ipam": {"type": "calico-ipam"},
    }
    reference = {
        "cniVersion": "1.0.0",
        "name": "bench-ref",
        "type": "ptp",
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.128.0/17"}]], "dataDir": f"{workdir}/host-local"},
    }
    path = f"{launcher_dir(workdir)}:{REFERENCE_DIR}"
    return [
        PluginSet("ours", ours, path, {"CALICO_CNI_AGENT_SOCKET": ""}),
        PluginSet(AGENT_LABEL, ours, path, {"CALICO_CNI_AGENT_SOCKET": agent_socket(workdir)}),
        PluginSet("reference", reference, REFERENCE_DIR),
    ]


def launcher_dir(workdir: str) -> str:
    """Where the benchmark installs our executables: the launchers install-cni.sh installs
    (`python -I -S`), not pip's console scripts, so the exec'd cost is the operator's."""
    return f"{workdir}/bin"


def agent_socket(workdir: str) -> str:
    return f"{workdir}/agent/cni.sock"


def import_profile() -> list[tuple[str, float]]:
    """The slowest top-level imports of a plugin's ADD path (python -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import calico_cni.plugins.calico, calico_cni.plugins.calico_ipam"],
        capture_output=True,
        text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:
            rows.append((m.group(3), int(m.group(1)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:8]


def ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.1f}x" if ref else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table: the header, its separator, then one line per row."""

    def line(cells: list) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), "|---" * len(header) + "|", *map(line, rows)]


def comparison(first: str, headers: list[list[str]], rows: dict[str, dict], cells, key: str) -> list[str]:
    """A table with a line per entry of `rows` ({plugin set label: data}): each set's `cells(data)`
    under its `headers`, then ours and ours + agent against the reference on data[key]."""
    header = [first, *(h for hs in headers for h in hs), *(f"{label} / ref" for label in OURS)]
    body = [
        [name, *(c for label in SETS for c in cells(by_set[label])), *(ratio(by_set[label][key], by_set["reference"][key]) for label in OURS)]
        for name, by_set in rows.items()
    ]
    return table(header, body)


def markdown(results: dict) -> str:
    lines = [f"Benchmark run {results['when']} on {results['machine']}.", ""]
    lat = results["latency"]
    lines += comparison(
        "verb",
        [[f"{name} median", "p90", "p99"] for name in (*OURS, "ptp+host-local")],
        {verb: {label: lat[label][verb] for label in SETS} for verb in ("VERSION", "ADD", "CHECK", "DEL")},
        lambda x: (f"{x['median']} ms", x["p90"], x["p99"]),
        "median",
    )
    rss = ", ".join(f"{label} {lat[label]['peak_rss_mb']} MB" for label in SETS)
    lines += ["", f"Peak RSS of one exec'd invocation: {rss} (with the agent, the exec'd process is the thin client).", ""]
    lines += comparison(
        "burst",
        [[f"{label}: all done", "p99 per call"] for label in SETS],
        {f"{size} x {verb}": {label: data[label][verb] for label in SETS} for size, data in results["bursts"].items() for verb in ("ADD", "DEL")},
        lambda x: (f"{x['total_ms']} ms", f"{x['p99']} ms"),
        "total_ms",
    )
    ph = results["phases"]
    lines += ["", f"Where our ADD and DEL spend their time (mean ms; an empty interpreter started as the launchers start it (python -I -S) exits after {ph.get('interpreter_start_ms', '?')} ms):", ""]
    keys = sorted({k for verb in ("ADD", "DEL") for k in ph[verb]})
    lines += table(["phase", *(k[:-3] for k in keys)], [[verb, *(ph[verb].get(k, 0) for k in keys)] for verb in ("ADD", "DEL")])
    lines += ["", "wall = measured outside the process; process = since exec, as the process sees it; verb = from the verb's handler to exit; imports = the verb's modules; "
              "etcd_connect = importing gRPC and pyetcd and opening the channel; etcd, netlink, sysctl = time inside those calls."]
    columns = list(dict.fromkeys(label for counts in results["round_trips"].values() for label in counts))
    lines += ["", *table(["etcd round trips (counted)", *columns], [[k, *(v.get(c) for c in columns)] for k, v in results["round_trips"].items()])]
    c = results["cluster"]
    lines += [
        "",
        f"Cluster scale: {c['nodes']} simulated nodes x {c['allocations'] // max(c['nodes'], 1)} allocations, concurrently, one etcd: "
        f"{c['allocations']} allocations in {c['seconds']} s ({c['allocations_per_second']}/s), {c['cas_conflicts_retried']} CAS conflicts retried, "
        f"{c['duplicates']} duplicates, {c['blocks_claimed']} blocks claimed, {c['errors']} errors.",
        "",
        "Slowest imports on the ADD path (ms, cumulative): " + ", ".join(f"{m} {t:.0f}" for m, t in results["imports"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--bursts", default="50,100")
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--per-node", type=int, default=40)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.run: run as root (it creates network namespaces)")
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.node()} {os.cpu_count()} CPUs {platform.release()}"}
    with fabric_with_etcd() as (fabric, endpoint), tempfile.TemporaryDirectory() as work:
        from calico_cni.launcher import write_all

        write_all(launcher_dir(work))
        sets = plugin_sets(endpoint, work)
        ipam.fresh_pool(endpoint, "198.18.0.0/17")
        node = create_node(fabric)
        try:
            with agent_in(node, launcher_dir(work), agent_socket(work), f"{work}/agent.log"):
                results["latency"] = {}
                for ps in sets:
                    print(f"latency: {ps.label} ({args.pods} pods)", file=sys.stderr)
                    results["latency"][ps.label] = latency(ps, node, args.pods)
                print("phases of ADD and DEL", file=sys.stderr)
                results["phases"] = phases(sets[0], node, max(3, min(args.pods, 10)))
                results["bursts"] = {}
                for size in (int(s) for s in args.bursts.split(",") if s):
                    results["bursts"][size] = {}
                    for ps in sets:
                        print(f"burst: {ps.label} x {size}", file=sys.stderr)
                        results["bursts"][size][ps.label] = burst(ps, node, size)
        finally:
            delete_node(node)
        print("etcd round trips and cluster scale", file=sys.stderr)
        results["round_trips"] = ipam.round_trips(endpoint)
        results["cluster"] = ipam.cluster_scale(endpoint, args.nodes, args.per_node)
    results["imports"] = import_profile()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
