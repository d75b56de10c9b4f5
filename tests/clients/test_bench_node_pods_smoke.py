"""The pods-through-calico-node benchmark (bench/node_pods.py) runs end to end on its smallest
settings and leaves nothing behind. Its numbers are not checked (speed is measured by the
benchmark, never asserted): only that every measurement was made, that the profile carries
calico-node's own report of each request, and that every process and namespace it made is gone."""

import json

import pytest

from tests.clients.test_bench_routing_smoke import _leftovers, run_benchmark


@pytest.mark.timeout(400)  # the run's own bound is 240 s plus up to 60 s of cleanup after SIGTERM
def test_node_pods_benchmark_runs_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    args = ["--pods", "2", "--bursts", "3", "--policy-pods", "1", "--profile-pods", "1", "--idle", "1", "--out", str(out)]
    proc, stderr = run_benchmark("bench.node_pods", args, 240)
    assert proc.returncode == 0, stderr[-3000:]
    assert _leftovers(proc.pid, b"calico-bench-node-pods-") == []
    results = json.loads((out / "node_pods.json").read_text())
    for label in ("ours + calico-node", "ptp+host-local"):
        assert {verb: results["latency"][label][verb]["n"] for verb in ("VERSION", "ADD", "CHECK", "DEL")} == dict.fromkeys(("VERSION", "ADD", "CHECK", "DEL"), 2)
        assert results["bursts"]["3"][label]["ADD"]["n"] == 3
    assert results["policy"]["ADD"]["n"] == 1 and results["restart"]["attempts"] >= 1
    profile = results["profile"]
    # calico-node's report of each request: its time, its etcd calls, the policy programming of ADD and DEL.
    for verb in ("ADD", "DEL"):
        assert profile[verb]["daemon_ms"] > 0 and profile[verb]["etcd_calls"] >= 1 and profile[verb]["policy_calls"] == 1
    assert results["idle_memory_mb"]["VmRSS"] > 0
    lines = (out / "node_pods.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            assert lines[i - 1].count("|") == line.count("|") == lines[i + 1].count("|"), (lines[i - 1], line, lines[i + 1])
