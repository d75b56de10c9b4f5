"""Reading the plugins' log files back: the record format and every file of a rotated log (the live
file and its numbered backups). Shared by tests/unit/test_logs.py and
tests/namespaces/test_calico_logging.py."""

from __future__ import annotations

import glob
import re

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\[\d+\] ")


def log_files(path: str) -> list[str]:
    return [f for f in glob.glob(path + "*") if not f.endswith(".lock")]


def read_records(path: str) -> list[str]:
    lines = []
    for name in log_files(path):
        with open(name, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return lines
