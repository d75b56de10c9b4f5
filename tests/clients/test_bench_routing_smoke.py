"""The routing benchmark (bench/routing.py) runs end to end on 2 nodes, 1 repetition, and leaves
nothing behind. Its numbers are not checked (speed is measured by the benchmark, never asserted):
only that every measurement was made and every process and namespace it made is gone."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _leftovers(pid: int, directory: bytes = b"calico-bench-routing-") -> list[str]:
    """Namespaces named after the benchmark's pid, and BIRDs or calico-nodes of its directories
    (named with `directory`)."""
    left = [name for name in os.listdir("/var/run/netns") if name.endswith(f"-{pid}")] if os.path.isdir("/var/run/netns") else []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if directory in argv and (b"bird" in argv or b"calico-node" in argv):
            left.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
    return left


def run_benchmark(module: str, args: list[str], timeout: float) -> tuple[subprocess.Popen, str]:
    """Run `python -m <module> <args>` from the checkout; (its process, its stderr). A run past
    `timeout` is stopped with SIGTERM, on which a benchmark removes what it made."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=60)
    return proc, stderr


def test_routing_benchmark_runs_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    proc, stderr = run_benchmark("bench.routing", ["--nodes", "2", "--reps", "1", "--idle", "1", "--busy", "1", "--out", str(out)], 120)
    assert proc.returncode == 0, stderr[-3000:]
    assert _leftovers(proc.pid) == []
    (size,) = json.loads((out / "routing.json").read_text())["sizes"]
    assert size["nodes"] == 2
    # One new block and one borrowed address, each seen from the other node; one node removed.
    assert size["new_block"]["reply"]["n"] == 1 and size["new_block"]["routed"]["n"] == 1
    assert size["new_block"]["claim_to_route"]["n"] == 1
    assert size["borrowed"]["reply_owner"]["n"] == 1 and size["borrowed"]["routed"]["n"] == 1
    assert size["removal"]["vanished_then_deleted"]["per_node"]["n"] == 1
    assert size["removal"]["vanished_then_deleted"]["left_after"] == {}
    assert size["busy"]["cni_ops"] > 0 and size["busy"]["cni_errors"] == 0
    assert size["busy"]["etcd"]["unary"] > 0
    for phase in ("build", "new_block", "borrowed", "removal"):
        assert size["cpu"][phase]["machine_pct"] >= 0
    text = (out / "routing.md").read_text()
    assert "first reply from a pod on B" in text and "| 2 | idle |" in text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            assert lines[i - 1].count("|") == line.count("|") == lines[i + 1].count("|"), (lines[i - 1], line, lines[i + 1])
