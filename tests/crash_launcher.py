"""Test-only launchers that can SIGKILL their own process just before its Nth etcd write.

The crash tests need a plugin (or an agent) that dies between two datastore writes. Production code
reads no test variable, so the hook lives here: `crashing(name)` is a launcher like the ones
`calico_cni.launcher` renders (the venv's interpreter as `python -I -S`, `sys.path` set by the
script), that calls `run(entry_point)` below instead of the entry point itself. `run` installs the
hook when the process environment has `KILL=N` and then calls the same entry point
(`calico_cni.main:main`, `calico_ipam.main:main`, `calico_cni.agent.main:main`).

`crashing(name)` returns an absolute path, so it can be given as the `plugin` of
`run_calico`/`popen_calico` (`plugin_path` leaves an absolute path as it is).

This module is imported by the launchers before the entry point: standard library only at its top.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

# The environment variable a crash test sets: SIGKILL the process just before its Nth commit.
KILL = "CALICO_CNI_TEST_KILL_AT_WRITE"

# The programs a crash launcher is written for (their entry points: calico_cni.launcher's).
PROGRAMS = ("calico", "calico-ipam", "calico-cni-agent")

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_directory: str | None = None


def install_kill_hook(n: int) -> None:
    """Make this process SIGKILL itself just before its `n`th `EtcdClient.commit` (counted over
    every client and, in an agent, every request), so nothing of that commit reaches etcd."""
    from calico_cni.datastore.etcd import EtcdClient

    commit = EtcdClient.commit
    lock = threading.Lock()
    writes = 0

    def commit_or_die(self, *args, **kwargs):
        nonlocal writes
        with lock:
            writes += 1
            if writes == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return commit(self, *args, **kwargs)

    EtcdClient.commit = commit_or_die


def run(entry_point: str) -> None:
    """What a crash launcher runs: the kill hook when $KILL asks for it, then `module:function`."""
    n = int(os.environ.get(KILL) or 0)
    if n:
        install_kill_hook(n)
    module, _, function = entry_point.partition(":")
    __import__(module)
    getattr(sys.modules[module], function)()


def render(entry_point: str) -> str:
    """The launcher text for `module:function`, like `calico_cni.launcher.render`'s but calling
    `run` here (the repository root on `sys.path` too, for this module)."""
    from calico_cni.launcher import import_path

    return (
        f"#!{sys.executable} -IS\n"
        "import sys\n"
        f"sys.path[:0] = {[_REPO_ROOT, *import_path()]!r}\n"
        "from tests.crash_launcher import run\n"
        f"run({entry_point!r})\n"
    )


def crashing(name: str) -> str:
    """The absolute path of the crash launcher of `name` (calico, calico-ipam or
    calico-cni-agent), written once per test session into a temporary directory."""
    global _directory
    if _directory is None:
        import atexit
        import shutil
        import tempfile

        # Not at the top: a launcher imports this module before its entry point, and this one
        # imports `site`, which `python -S` skips.
        from calico_cni.launcher import ENTRY_POINTS

        directory = tempfile.mkdtemp(prefix="calico-cni-crash-bin-")
        os.chmod(directory, 0o755)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        for program in PROGRAMS:
            path = os.path.join(directory, program)
            with open(path, "w") as f:
                f.write(render(ENTRY_POINTS[program]))
            os.chmod(path, 0o755)
        _directory = directory
    return os.path.join(_directory, name)
