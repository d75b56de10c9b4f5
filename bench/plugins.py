"""Per-invocation latency, bursts and peak memory of a main plugin and its IPAM, exec'd as a
runtime execs them, each pod a fresh network namespace inside a node namespace."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tests import netns
from tests.clients.harness import Node, create_netns, remove_netns


@dataclass
class PluginSet:
    """What is measured: a main plugin (`type` of `conf`), found in `path` (a CNI_PATH)."""

    label: str
    conf: dict
    path: str
    # Extra environment of every exec (ours: which agent socket, "" for none).
    env: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The label as it may appear in a container ID."""
        return "-".join(self.label.replace("+", " ").split())

    @property
    def binary(self) -> str:
        for directory in self.path.split(":"):
            candidate = os.path.join(directory, self.conf["type"])
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(self.conf["type"])


GNU_TIME = "/usr/bin/time"


@dataclass
class Timed:
    seconds: float
    rc: int
    stdout: str
    stderr: str = ""


def run_timed(argv: list[str], env: dict, stdin: bytes) -> Timed:
    """Exec once and measure the wall time."""
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    return Timed(elapsed, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _env(ps: PluginSet, command: str, container: str, netns_path: str) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": ps.path,
        **ps.env,
    }


def _invoke(ps: PluginSet, command: str, container: str, netns_path: str, conf: dict | None = None, prefix: tuple = ()) -> Timed:
    timed = run_timed([*prefix, ps.binary], _env(ps, command, container, netns_path), json.dumps(conf or ps.conf).encode())
    if timed.rc != 0:
        raise RuntimeError(f"{ps.label} {command} {container} failed: {timed.stdout[:500]}")
    return timed


def percentiles(values: list[float]) -> dict[str, float]:
    """Median, p90 and p99 in milliseconds."""
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"median": round(statistics.median(ordered) * 1000, 2), "p90": round(pick(0.9) * 1000, 2), "p99": round(pick(0.99) * 1000, 2), "n": len(ordered)}


class _InNode:
    """Run the enclosed block with this thread in the node namespace (exec'd plugins inherit it)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def __enter__(self):
        self.previous = netns.enter(self.node.name)

    def __exit__(self, *exc):
        netns.leave(self.previous)


def latency(ps: PluginSet, node: Node, pods: int) -> dict:
    """VERSION, ADD, CHECK and DEL of `pods` pods, one at a time."""
    times: dict[str, list[float]] = {"VERSION": [], "ADD": [], "CHECK": [], "DEL": []}
    for i in range(pods):
        pod = create_netns("benchpod")
        cid = f"bench-{ps.slug}-{i}"
        try:
            with _InNode(node):
                added = None  # ADD's stdout, CHECK's prevResult
                for command in ("VERSION", "ADD", "CHECK", "DEL"):
                    conf = {**ps.conf, "prevResult": json.loads(added)} if command == "CHECK" else ps.conf
                    timed = _invoke(ps, command, cid, pod, conf)
                    if command == "ADD":
                        added = timed.stdout
                    times[command].append(timed.seconds)
        finally:
            remove_netns(os.path.basename(pod))
    out = {verb: percentiles(values) for verb, values in times.items()}
    out["peak_rss_mb"] = peak_rss(ps, node)
    return out


def phases(ps: PluginSet, node: Node, pods: int) -> dict:
    """Where ADD and DEL spend their time (our plugins only): the plugin's own CALICO_CNI_TIMING
    report averaged over `pods` pods, next to the wall time measured outside and the time an empty
    interpreter of the same venv takes to start and exit."""
    out: dict = {}
    starts = [run_timed([sys.executable, "-I", "-S", "-c", "pass"], {}, b"").seconds for _ in range(10)]
    out["interpreter_start_ms"] = round(statistics.median(starts) * 1000, 2)
    samples: dict[str, list[dict]] = {"ADD": [], "DEL": []}
    for i in range(pods):
        pod = create_netns("benchphase")
        try:
            with _InNode(node):
                for command in ("ADD", "DEL"):
                    env = {**_env(ps, command, f"bench-phase-{i}", pod), "CALICO_CNI_TIMING": "1"}
                    timed = run_timed([ps.binary], env, json.dumps(ps.conf).encode())
                    report = [json.loads(line.split(" ", 2)[2]) for line in timed.stderr.splitlines() if line.startswith("calico-cni timing ")]
                    if timed.rc != 0 or not report:
                        raise RuntimeError(f"{command} with timing failed: {timed.stdout[:300]} {timed.stderr[-300:]}")
                    samples[command].append({"wall_ms": timed.seconds * 1000, **report[0]})
        finally:
            remove_netns(os.path.basename(pod))
    for command, rows in samples.items():
        keys = sorted({k for row in rows for k in row if k.endswith("_ms")})
        out[command] = {k: round(statistics.mean(row.get(k, 0.0) for row in rows), 2) for k in keys}
    return out


def peak_rss(ps: PluginSet, node: Node) -> float:
    """Peak RSS (MB) of one ADD and one DEL, measured by GNU time, whose small process is the
    plugin's parent (wait4 in this large process would count the memory it had before exec)."""
    pod = create_netns("benchrss")
    peak = 0
    try:
        with _InNode(node):
            for command in ("ADD", "DEL"):
                timed = _invoke(ps, command, "bench-rss", pod, prefix=(GNU_TIME, "-f", "maxrss=%M"))
                kb = [int(line.split("=")[1]) for line in timed.stderr.splitlines() if line.startswith("maxrss=")]
                peak = max([peak, *kb])
    finally:
        remove_netns(os.path.basename(pod))
    return round(peak / 1024, 1)


def burst(ps: PluginSet, node: Node, size: int) -> dict:
    """`size` ADDs started at once, then `size` DELs at once: total time and p99 per invocation."""
    pods = [create_netns("benchburst") for _ in range(size)]
    result = {}
    try:
        for command in ("ADD", "DEL"):
            barrier = threading.Barrier(size)

            def one(i: int, command=command, barrier=barrier) -> float:
                barrier.wait()
                return _invoke(ps, command, f"burst-{ps.slug}-{i}", pods[i]).seconds

            with _InNode(node):
                start = time.perf_counter()
                with ThreadPoolExecutor(size) as pool:
                    each = list(pool.map(one, range(size)))
                total = time.perf_counter() - start
            result[command] = {"total_ms": round(total * 1000, 1), **percentiles(each)}
    finally:
        for pod in pods:
            remove_netns(os.path.basename(pod))
    return result
