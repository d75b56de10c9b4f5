"""Plugin logging: stdout carries only CNI JSON; the log file is rotated by size, count and age,
and many plugin processes appending at once never lose or interleave a record (a node runs many
plugin processes at once, all appending to one file)."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.calico_support import ok, pod_env, run_calico
from tests.pools import create_pool

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\[\d+\] ")

WRITER = r"""
import logging, sys
from calico_cni import logs
path, worker, count, max_kb, backups = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
logs.setup({"level": "info", "path": path, "max_size_mb": max_kb / 1024, "max_count": backups, "max_age_days": 30}, f"writer {worker}")
log = logging.getLogger("writer")
for n in range(count):
    log.info("record %s-%05d %s", worker, n, "x" * (n % 40))
"""


def log_files(path: str) -> list[str]:
    return [f for f in glob.glob(path + "*") if not f.endswith(".lock")]


def read_records(path: str) -> list[str]:
    lines = []
    for name in log_files(path):
        with open(name, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return lines


def writers(path: str, processes: int, count: int, max_kb: float, backups: int) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, f"w{i}", str(count), str(max_kb), str(backups)])
        for i in range(processes)
    ]
    for proc in procs:
        assert proc.wait(120) == 0


def test_concurrent_writers_lose_and_interleave_nothing(tmp_path):
    path = str(tmp_path / "cni.log")
    processes, count, max_kb = 8, 400, 8
    writers(path, processes, count, max_kb, backups=500)
    lines = read_records(path)
    assert all(RECORD_START.match(line) for line in lines), [l for l in lines if not RECORD_START.match(l)][:3]
    seen = [re.search(r"record (w\d+-\d{5}) (x*)$", line) for line in lines]
    assert all(seen), "a record was cut or merged with another"
    ids = [m.group(1) for m in seen]
    assert len(ids) == len(set(ids)) == processes * count, "every record exactly once"
    files = log_files(path)
    assert len(files) > 10, "the writers must have rotated many times"
    longest = max(len(line) + 1 for line in lines)
    for name in files:
        # A file may overrun by the records that raced a rotation: at most one per writer.
        assert os.path.getsize(name) <= max_kb * 1024 + processes * longest, name


def test_rotation_keeps_max_count_backups(tmp_path):
    path = str(tmp_path / "cni.log")
    writers(path, 1, 2000, max_kb=4, backups=3)
    assert sorted(os.path.basename(f) for f in log_files(path)) == ["cni.log", "cni.log.1", "cni.log.2", "cni.log.3"]
    with open(path, encoding="utf-8") as f:
        assert "record w0-01999" in f.read(), "the newest record is in the current file"


def test_rotation_removes_backups_older_than_max_age(tmp_path):
    path = str(tmp_path / "cni.log")
    old = time.time() - 40 * 86400
    for n in (1, 2):
        with open(f"{path}.{n}", "w") as f:
            f.write("old\n")
        os.utime(f"{path}.{n}", (old, old))
    with open(path, "w") as f:
        f.write("x" * 5000 + "\n")
    writers(path, 1, 1, max_kb=4, backups=10)  # one record: the full file rotates
    names = sorted(os.path.basename(f) for f in log_files(path))
    assert names == ["cni.log", "cni.log.1"], names
    with open(f"{path}.1") as f:
        assert f.read().startswith("xxxx"), "the rotated file is the one that was current"


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


def test_no_log_file_grows_past_its_maximum(tmp_path):
    """Rotation happens before a record would push the file past log_file_max_size."""
    import logging as _logging

    from calico_cni.logs import RotatingAppendHandler

    path = tmp_path / "cni.log"
    handler = RotatingAppendHandler(str(path), 1000, 3, 30)
    handler.setFormatter(_logging.Formatter("%(message)s"))
    try:
        for i in range(200):
            handler.emit(_logging.LogRecord("t", _logging.INFO, "", 0, f"record {i:03d} " + "x" * 40, None, None))
    finally:
        handler.close()
    files = [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert len(files) == 4  # the live file and max_count (3) rotated ones
    assert all(p.stat().st_size <= 1000 for p in files), {p.name: p.stat().st_size for p in files}
    assert "record 199" in path.read_text()
