"""The policy benchmark (bench/policy.py) runs end to end on its smallest settings and leaves nothing
behind. Its numbers are not checked (speed is measured by the benchmark, never asserted): only
that every measurement was made, that each policy applied ended up jumped to by every endpoint it
selects, and that every process and namespace it made is gone."""

import json

import pytest

from tests.clients.test_bench_routing_smoke import _leftovers, run_benchmark


@pytest.mark.timeout(600)  # the run's own bound is 240 s plus up to 60 s of cleanup after SIGTERM: past the suite's 300 s default
def test_policy_benchmark_runs_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    args = ["--sizes", "2,5", "--reps", "1", "--policies", "6", "--local", "3", "--remote", "2", "--adds", "1", "--idle", "1", "--out", str(out)]
    proc, stderr = run_benchmark("bench.policy", args, 240)
    assert proc.returncode == 0, stderr[-3000:]
    assert _leftovers(proc.pid, b"calico-bench-policy-") == []
    results = json.loads((out / "policy.json").read_text())
    assert [a["endpoints"] for a in results["apply"]] == [2, 5]
    for a in results["apply"]:
        assert a["after_write"]["n"] == 1 and a["all_jumping"]
    resync = results["resync"]
    # 6 policies over 3 local endpoints in 6 label groups: 3 policies apply, each an ingress and an egress chain.
    assert resync["chains"] == {"policy_chains": 6, "endpoint_chains": 6}
    assert resync["one_more_all_jumping"] and resync["one_more_after_write"]["n"] == 1 and resync["add"]["n"] == 1
    assert results["add"]["bare"]["n"] == 1 and results["add"]["loaded"]["n"] == 1
    assert results["idle_memory_mb"]["VmRSS"] > 0 and resync["memory_mb"]["VmRSS"] > 0
    text = (out / "policy.md").read_text()
    assert "the write in etcd -> enforced" in text and "Felix (reference)" in text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            assert lines[i - 1].count("|") == line.count("|") == lines[i + 1].count("|"), (lines[i - 1], line, lines[i + 1])
