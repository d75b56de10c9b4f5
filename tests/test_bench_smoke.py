"""The benchmark runs end to end at tiny sizes (its numbers are not checked here: speed goals are
measured by the benchmark itself, never asserted in tests)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_runs(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--pods", "2", "--bursts", "3", "--nodes", "2", "--per-node", "3", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for label in ("ours", "ours + agent", "reference"):
        assert results["latency"][label]["ADD"]["n"] == 2
        assert results["latency"][label]["peak_rss_mb"] > 0
        assert results["bursts"]["3"][label]["ADD"]["n"] == 3
    assert results["cluster"]["allocations"] == 6 and results["cluster"]["duplicates"] == 0
    assert set(results["round_trips"]) == {"allocation claiming a new block", "allocation from a held block", "release"}
    assert "| ADD |" in (out / "results.md").read_text()
