"""Reading the plugins' log files back: the record format and every file of a rotated log (the live
file and its numbered backups); and the root logger put back after a test that set logging up as
a daemon does. Shared by the tests of logging (tests/unit, tests/namespaces)."""

from __future__ import annotations

import contextlib
import glob
import logging
import re
from typing import Iterator

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\[\d+\] ")


def log_files(path: str) -> list[str]:
    return [f for f in glob.glob(path + "*") if not f.endswith(".lock")]


def read_records(path: str) -> list[str]:
    lines = []
    for name in log_files(path):
        with open(name, encoding="utf-8") as f:
            lines += f.read().splitlines()
    return lines


@contextlib.contextmanager
def root_logging_restored() -> Iterator[None]:
    """Run the enclosed block (which may set up logging as a daemon does), then close whatever
    handlers it left on the root logger and put the root logger back as it was."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
