"""The benchmark runs end to end at tiny sizes (its numbers are not checked here: speed goals are
measured by the benchmark itself, never asserted in tests)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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


def test_markdown_tables():
    """bench.run.markdown on fixed numbers: every table's separator has as many columns as its
    header and rows, and the ratios are ours (or ours + agent) over the reference."""
    from bench.run import markdown

    def lat(median):
        return {"median": median, "p90": median + 1, "p99": median + 2, "n": 1}

    def verbs(median):
        return {verb: lat(median) for verb in ("VERSION", "ADD", "CHECK", "DEL")}

    def burst(total):
        return {verb: {"total_ms": total, "p99": 1.5, "median": 1.0, "p90": 1.2, "n": 3} for verb in ("ADD", "DEL")}

    results = {
        "when": "now",
        "machine": "m",
        "latency": {"ours": {**verbs(20.0), "peak_rss_mb": 30.0}, "ours + agent": {**verbs(5.0), "peak_rss_mb": 10.0}, "reference": {**verbs(2.0), "peak_rss_mb": 5.0}},
        "bursts": {"3": {"ours": burst(90.0), "ours + agent": burst(30.0), "reference": burst(0)}},
        "phases": {"interpreter_start_ms": 8.0, "ADD": {"wall_ms": 10.0, "etcd_ms": 2.0}, "DEL": {"wall_ms": 9.0}},
        "round_trips": {"release": {"exec'd, no agent": 3, "agent": 2}},
        "cluster": {"nodes": 2, "allocations": 6, "seconds": 1.0, "allocations_per_second": 6.0, "cas_conflicts_retried": 0, "duplicates": 0, "blocks_claimed": 1, "errors": 0},
        "imports": [("grpc", 30.0)],
    }
    text = markdown(results)
    lines = text.splitlines()
    assert "| ADD | 20.0 ms | 21.0 | 22.0 | 5.0 ms | 6.0 | 7.0 | 2.0 ms | 3.0 | 4.0 | 10.0x | 2.5x |" in lines
    assert "| 3 x DEL | 90.0 ms | 1.5 ms | 30.0 ms | 1.5 ms | 0 ms | 1.5 ms | - | - |" in lines
    assert "| DEL | 0 | 9.0 |" in lines  # a phase the verb did not report is 0
    assert "| release | 3 | 2 |" in lines
    assert "Peak RSS of one exec'd invocation: ours 30.0 MB, ours + agent 10.0 MB, reference 5.0 MB" in text
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            columns = line.count("|") - 1
            header, first_row = lines[i - 1], lines[i + 1]
            assert header.count("|") - 1 == columns == first_row.count("|") - 1, (header, line, first_row)
