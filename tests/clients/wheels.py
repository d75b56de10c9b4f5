"""The project's Python dependencies as local wheels, for scripts that pip-install the project
(scripts/install-cni.sh, and scripts/demo.sh through it) run from the fabric namespace.

The fabric namespace the session runs in has no route to PyPI, so the wheels are downloaded once
from the namespace pytest was started from (a pip download, nothing else runs there), and the
scripts' pip installs from them offline through pip's own environment variables, which the scripts
pass through: PIP_NO_INDEX=1, PIP_FIND_LINKS=<wheelhouse>.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest

from tests.clients.conftest import REPO
from tests.clients.harness import run_in

# Where PyPI is reachable: the namespace pytest was started from (the session moved to the fabric).
START_NETNS = f"/proc/{os.getppid()}/ns/net"


def download_wheels(directory: Path) -> None:
    """pyproject.toml's build requirements and dependencies as wheels for this Python version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
            "--python-version", version, "--dest", str(directory), *wanted]
    downloaded = run_in(START_NETNS, argv, timeout=600)
    if downloaded.rc != 0:
        pytest.fail(f"cannot download the project's dependencies (is PyPI reachable?)\n{downloaded.describe()}", pytrace=False)


def offline_pip_env(wheelhouse: Path) -> dict[str, str]:
    """Environment variables that make pip install from the wheelhouse only."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
