"""Render the executables installed into a CNI bin directory (`calico`, `calico-ipam`) and next to
it (`calicoctl`, `calico-cni-agent`, `calico-node`).

A launcher starts the interpreter of the plugins' virtual environment directly, as
`python -I -S`, and puts the package's directories on `sys.path` itself. Skipping `site` saves
most of an interpreter's start (site and the .pth files of a virtual environment cost 5 to 15 ms of
a thin plugin run that needs about 8 ms in all); `-I` keeps PYTHON* variables and the user's
site-packages out. pip's console scripts would also import `re` on every run.

The plugins' launchers (`calico`, `calico-ipam`) hand the request to the node's daemon first with
`calico_cni.agent.client` alone, and import the plugins' package only when they run in-process: a
forwarded request loads three modules of ours, not six (with `os`, 3 ms of a 12 ms run). They are
rendered by name (a `module:function` gives the plain launcher, which imports that module first):

    python -m calico_cni.launcher calico > /opt/cni/bin/calico
"""

from __future__ import annotations

import os
import site
import sys

from calico_cni.files import replace_file

# The plugins: their launchers forward to the daemon before importing anything else (see above).
PLUGINS = ("calico", "calico-ipam")
ENTRY_POINTS = {
    "calico": "calico_cni.main:main",
    "calico-ipam": "calico_ipam.main:main",
    "calicoctl": "calico_cni.ctl.main:cli",
    "calico-cni-agent": "calico_cni.agent.main:main",
    "calico-node": "calico_cni.node.main:main",
}


def import_path() -> list[str]:
    """The directories the launcher puts on sys.path: where this package lives (an editable
    install keeps it in the source tree), then the environment's site-packages."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_root, *site.getsitepackages()]
    return list(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def render(entry_point: str, python: str | None = None) -> str:
    """The launcher text for `module:function`, or for a plugin's name (one of PLUGINS), run by
    `python` (default: this interpreter, which must be the environment's own, never a pyenv shim)."""
    python = python or sys.executable
    head = f"#!{python} -IS\nimport sys\nsys.path[:0] = {import_path()!r}\n"
    if entry_point in PLUGINS:
        # The thin client exits with the daemon's answer; it returns only to run in-process.
        return (
            head + "from calico_cni.agent.client import main_thin\n"
            f"stdin = main_thin({entry_point!r})\n"
            "from calico_cni.plugins.dispatch import run_in_process\n"
            f"run_in_process({entry_point!r}, stdin)\n"
        )
    module, _, function = entry_point.partition(":")
    if not module or not function:
        raise ValueError(f"entry point must be module:function, got {entry_point!r}")
    return head + f"from {module} import {function}\n{function}()\n"


def write_all(directory: str, names: tuple[str, ...] = tuple(ENTRY_POINTS)) -> list[str]:
    """Write launchers for `names` into `directory` (mode 0755); returns their paths."""
    written = []
    for name in names:
        path = os.path.join(directory, name)
        replace_file(path, render(name if name in PLUGINS else ENTRY_POINTS[name]), 0o755)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """`python -m calico_cni.launcher NAME|module:function`: print a launcher."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m calico_cni.launcher NAME|module:function")
    print(render(args[0] if args[0] in PLUGINS else ENTRY_POINTS.get(args[0], args[0])), end="")


if __name__ == "__main__":
    main()
