"""`calicoctl node status`: is calico-node running on this node, and the state of its BGP peers, as
Calico's command prints them (the same texts, and its bordered table).

BIRD 2 is one daemon for both families, so one control socket (`<run dir>/bird.ctl`) gives both
tables: a peer's family is that of the address in its protocol name (`Mesh_198_19_0_2`,
`Node_fd00_198_19__2`). "Calico process is running." means a calico-node process in this network
namespace (several nodes can run on one machine, each in its own namespace).
"""

from __future__ import annotations

import math
import os
import re
from typing import Sequence

import click

from calico_cni.dataplane.bird import BirdError, BirdUnreachable, Control, Peer, Protocol, calico_peers
from calico_cni.node import probes
from calico_cni.node.settings import DEFAULT_RUN_DIR, PROBES

HEADERS = ("Peer address", "Peer type", "State", "Since", "Info")
# Flags of calico-node's probes, with one dash (Calico's) or two: such a process is a probe, not the daemon.
_PROBE_FLAGS = {f"{dashes}{probe}" for probe in PROBES for dashes in ("-", "--")}

# The table printer Calico's calicoctl uses (olekukonko/tablewriter v0.0.5 with its defaults):
# headers upper-cased and centred, cells padded by one space, cells wider than 30 columns wrapped
# at word boundaries (minimum raggedness), numbers right-aligned, the rest left-aligned.
WRAP_WIDTH = 30
_WRAP_PENALTY = 100000
_DECIMAL = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})*|\d+)(?:\.\d+)?$")
_PERCENT = re.compile(r"^-?\d+\.?\d*$%$")


def _wrap_words(words: list[str], limit: int) -> list[list[str]]:
    """tablewriter's WrapWords: line breaks minimising the squared slack of every line but the last."""
    n = len(words)
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = len(words[i])
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + 1 + len(words[j])
    breaks = [0] * n
    cost = [math.inf] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= limit:
            cost[i], breaks[i] = 0, n
            continue
        for j in range(i + 1, n):
            slack = limit - length[i][j - 1]
            c = slack * slack + cost[j] + (_WRAP_PENALTY if length[i][j - 1] > limit else 0)
            if c < cost[i]:
                cost[i], breaks[i] = c, j
    lines, i = [], 0
    while i < n:
        lines.append(words[i:breaks[i]])
        i = breaks[i]
    return lines


def _cell_lines(text: str) -> tuple[list[str], int]:
    """A cell's lines and width after wrapping (a cell wider than WRAP_WIDTH is WRAP_WIDTH wide
    unless one word is wider)."""
    width = min(len(text), WRAP_WIDTH)
    words = text.split(" ")
    width = max([width, *map(len, words)])
    lines = [" ".join(line) for line in _wrap_words(words, width)] if text else [""]
    return lines, max([width, *map(len, lines)])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A bordered table as Calico's calicoctl prints it (each line ends with a newline)."""
    heads = [h.replace("_", " ").strip().upper() for h in headers]
    cells = [[_cell_lines(str(c)) for c in row] for row in rows]
    widths = [len(h) for h in heads]
    for row in cells:
        for i, (_, w) in enumerate(row):
            widths[i] = max(widths[i], w)
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def centred(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    def aligned(text: str, width: int) -> str:
        return text.rjust(width) if _DECIMAL.match(text.strip()) or _PERCENT.match(text.strip()) else text.ljust(width)

    out = [border, "| " + " | ".join(centred(h, w) for h, w in zip(heads, widths)) + " |\n", border]
    for row in cells:
        for k in range(max(len(lines) for lines, _ in row)):
            out.append("| " + " | ".join(aligned(lines[k] if k < len(lines) else "", w) for (lines, _), w in zip(row, widths)) + " |\n")
    out.append(border)
    return "".join(out)


def peer_rows(peers: Sequence[Peer]) -> list[list[str]]:
    """Calico's columns: address, type, protocol state, since, BGP state with its details."""
    return [[p.address, p.kind, p.protocol.state, p.protocol.since, p.protocol.info] for p in peers]


def bgp_status(protocols: Sequence[Protocol]) -> str:
    """The IPv4 and IPv6 sections of the output, from BIRD's protocol rows."""
    out = []
    for version in (4, 6):
        peers = calico_peers(list(protocols), version)
        out.append(f"\nIPv{version} BGP status\n")
        out.append(table(HEADERS, peer_rows(peers)) if peers else f"No IPv{version} peers found.\n")
    return "".join(out)


def _netns_of(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def is_calico_node(argv: Sequence[str]) -> bool:
    """Whether a command line is the calico-node daemon: `calico-node` (any directory) as the
    program, or as the script (or `-m calico_cni.node.main`) a Python interpreter runs; not one of
    its probes."""
    if not argv or _PROBE_FLAGS.intersection(argv):
        return False
    if os.path.basename(argv[0]) == "calico-node":
        return True
    if not os.path.basename(argv[0]).startswith("python"):
        return False
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return argv[i + 1:i + 2] == ["calico_cni.node.main"]
        if not arg.startswith("-"):
            return os.path.basename(arg) == "calico-node"
    return False


def calico_node_running(proc: str = "/proc") -> bool:
    """Whether a calico-node daemon runs in this network namespace."""
    own = _netns_of("self")
    for pid in os.listdir(proc):
        if not pid.isdigit() or pid == str(os.getpid()):
            continue
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if is_calico_node(argv) and _netns_of(pid) == own:
            return True
    return False


@click.command("status")
@click.option("--run-dir", envvar="CALICO_RUN_DIR", default=DEFAULT_RUN_DIR, show_default=True,
              help="calico-node's run directory, where BIRD's control socket bird.ctl is (env CALICO_RUN_DIR).")
def status(run_dir: str) -> None:
    """Check the status of the Calico node instance: whether calico-node runs, and the state of
    its BGP peers (from BIRD, for IPv4 and IPv6). Run it on the node, as root."""
    ctx = click.get_current_context()
    if os.geteuid() != 0:
        click.echo("Need super user privileges: Operation not permitted")
        ctx.exit(1)
    if not calico_node_running():
        click.echo("Calico process is not running.", err=True)
        ctx.exit(1)
    click.echo("Calico process is running.")
    # What keeps the node from being fully programmed (a part not ready: an IPIP pool this kernel
    # cannot carry, a VXLAN port taken...), from calico-node's own health answer, when its socket
    # is in this run directory.
    cni_socket = os.path.join(run_dir, "cni.sock")
    if os.path.exists(cni_socket):
        ready, message = probes.felix_ready(cni_socket)
        if not ready:
            click.echo(f"\n{message}")
    socket = os.path.join(run_dir, "bird.ctl")
    try:
        protocols = Control(socket).show_protocols()
    except BirdUnreachable as exc:
        click.echo("\nThe BGP backend process (BIRD) is not running.")
        click.echo(f"({exc}. Check that calico-node runs with CALICO_NETWORKING_BACKEND=bird, and that "
                   "--run-dir or CALICO_RUN_DIR names its run directory.)")
        click.echo()
        return
    except BirdError as exc:
        click.echo(f"Error executing command: {exc}", err=True)
        ctx.exit(1)
    click.echo(bgp_status(protocols))
