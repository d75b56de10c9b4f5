"""Plugin logging as the exec'd `calico` does it: stdout carries only CNI JSON, and many plugin
processes appending to one rotating log at once (a node runs many) never lose or interleave a
record. Rotation by size, count and age is tested without a plugin in tests/unit/test_logs.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.calico_support import ok, pod_env, run_calico
from tests.log_records import RECORD_START, log_files, read_records
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


def test_stdout_carries_only_the_result(store, node, pod, calico_conf, tmp_path):
    create_pool(store, "v4", "198.18.6.0/24", 26)
    conf = calico_conf(log_level="debug")
    p = pod()
    run = run_calico(node, "ADD", conf, pod_env(p))
    ok(run)
    assert run.stdout.count("\n") == 1 and json.loads(run.stdout)["ips"]
    assert "DEBUG" not in run.stderr and "INFO" not in run.stderr, "only warnings and errors go to stderr"
    with open(conf["log_file_path"]) as f:
        text = f.read()
    assert "[DEBUG]" in text and "added eth0" in text
    failed = run_calico(node, "ADD", {**conf, "mtu": "big"}, pod_env(p))
    assert failed.rc != 0 and failed.stdout.count("\n") == 1
    assert json.loads(failed.stdout)["code"] == 7


def test_many_plugin_processes_share_one_rotating_log(store, node, pod, calico_conf):
    """Concurrent `calico` processes, a log rotated every 200 bytes: every record arrives whole."""
    conf = calico_conf(log_level="debug", log_file_max_size=0.0002, log_file_max_count=1000)
    procs = []
    for i in range(12):
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "DEL", **pod_env(f"gone-{i}", container_id=f"ctr-{i}", CNI_NETNS="")}
        procs.append(
            subprocess.Popen(
                ["nsenter", f"--net={node.path}", sys.executable, "-m", "calico_cni.main"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        )
    for proc in procs:
        out, err = proc.communicate(json.dumps(conf).encode(), timeout=60)
        assert proc.returncode == 0, err.decode()
        assert out == b""
    lines = read_records(conf["log_file_path"])
    assert len(log_files(conf["log_file_path"])) > 5
    assert all(RECORD_START.match(line) for line in lines), [l for l in lines if not RECORD_START.match(l)][:3]
    finished = [l for l in lines if "released no address; endpoint absent" in l]
    assert sorted(re.search(r"calico DEL (ctr-\d+)/", l).group(1) for l in finished) == sorted(f"ctr-{i}" for i in range(12))
