"""The plugins' log file (calico_cni.logs) without a plugin: rotation by size, count and age, and
many processes appending to one file at once never lose or interleave a record (a node runs many
plugin processes, all appending to one file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from tests.log_records import RECORD_START, log_files, read_records

WRITER = r"""
import logging, sys
from calico_cni import logs
path, worker, count, max_kb, backups = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
logs.setup({"level": "info", "path": path, "max_size_mb": max_kb / 1024, "max_count": backups, "max_age_days": 30}, f"writer {worker}")
log = logging.getLogger("writer")
for n in range(count):
    log.info("record %s-%05d %s", worker, n, "x" * (n % 40))
"""


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
