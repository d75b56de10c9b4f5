"""The encapsulation benchmark (bench/encapsulation.py) runs end to end on its smallest settings and
leaves nothing behind. Its numbers are not checked (speed is measured by the benchmark, never
asserted): only that every measurement was made, over the path it names, and that every process
and namespace it made is gone."""

import json

from tests.clients.test_bench_routing_smoke import _leftovers, run_benchmark


def test_encapsulation_benchmark_runs_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    args = ["--nodes", "2", "--reps", "1", "--observers", "1", "--rounds", "1", "--iperf-reps", "1", "--seconds", "1",
            "--pings", "20", "--requests", "50", "--idle", "1", "--out", str(out)]
    proc, stderr = run_benchmark("bench.encapsulation", args, 240)
    assert proc.returncode == 0, stderr[-3000:]
    assert _leftovers(proc.pid, b"calico-bench-encap-") == []
    results = json.loads((out / "encapsulation.json").read_text())
    native, vxlan = results["path"]["native"], results["path"]["vxlan"]
    assert (native["device"], vxlan["device"]) == ("eth0", "vxlan.calico")
    assert (native["build"]["pod_mtu"], vxlan["build"]["pod_mtu"]) == (1500, 1450)
    for path in (native, vxlan):
        assert path["throughput"]["median_gbit_s"] > 0 and path["ping_us"]["n"] == 20 and path["tcp_rr_us"]["n"] == 50
    (size,) = results["sizes"]
    assert size["nodes"] == 2
    assert size["new_block"]["everywhere"]["n"] == 1 and size["new_block"]["everywhere"]["missed"] == 0
    assert size["new_block"]["unrouted_after"] == 0
    assert "VXLAN / native" in (out / "encapsulation.md").read_text()
