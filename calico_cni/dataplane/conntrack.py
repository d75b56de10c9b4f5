"""Conntrack entries of a removed endpoint's addresses, deleted with Debian's `conntrack` tool
(conntrack-tools 1.4.7): the only code that runs it.

Felix does the same (felix/conntrack): for each address it deletes the entries whose original
source or reply source is that address. Those two fields cover every flow of a local endpoint:
when the endpoint opened the flow it is the original source; when it received the flow, it is the
reply source (also after a DNAT to it, e.g. a hostPort, where the original destination is the
node's address). A pod address is never the target of SNAT, so the original and reply
destinations add no entry these two miss.

Each `conntrack -D` dumps the whole table and filters it itself; the kernel walks its conntrack
hash table (shared by all namespaces: about 10 ms for 262,144 buckets on a 2-vCPU Debian 12
machine) and concurrent walks took as long as consecutive ones there. The invocations are started
together so they share one deadline and their start-up overlaps: about 20 ms for one address, 40
ms for two. The tool exits 1 with "0 flow entries have been deleted" when nothing matched: that is
success. An entry that expires, or that a sibling invocation deletes, between the tool's dump and
its delete stops the tool with "Operation failed: such conntrack doesn't exist" and exit status 1,
leaving the rest of its matches; so a failed invocation is run again (Felix retries too), up to
ATTEMPTS runs within the deadline.

Many addresses at once (a pass that sees hundreds of endpoints go, a node drained): two walks per
address would take seconds of kernel time (2,000 processes for 1,000 addresses). Beyond BATCH
addresses the table is listed once (`conntrack -L`, both families), and only the original
source/destination pairs of the entries naming one of the addresses are deleted (`-s -d`), at
most PARALLEL tool runs at a time.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from typing import Iterable

from calico_cni.dataplane.errors import DataplaneError

CONNTRACK = "conntrack"
TIMEOUT = 5.0
# The tuple fields Felix deletes by (see the module docstring for why these two suffice).
DIRECTIONS = ("--orig-src", "--reply-src")
# Runs of one invocation in all, the first included (Felix: 1 + 3 retries).
ATTEMPTS = 4
# More addresses than this: one listing, then deletes of what matched (see the module docstring).
BATCH = 4
# Tool runs at once in a batch's deletes.
PARALLEL = 8
NOTHING_DELETED = "0 flow entries have been deleted"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ConntrackError(DataplaneError):
    """The conntrack tool is missing, failed, or did not finish in time."""


def _argv(address: Address, direction: str) -> list[str]:
    family = "ipv4" if address.version == 4 else "ipv6"
    return [CONNTRACK, "--family", family, "--delete", direction, str(address)]


def _start(argv: list[str]) -> subprocess.Popen:
    # stdout gets one line per deleted flow: not wanted. stderr carries the count and the errors.
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise ConntrackError(
            f"{CONNTRACK} is not installed: install Debian's conntrack package (apt-get install conntrack); "
            "it removes a deleted endpoint's connection tracking entries"
        ) from None
    except OSError as exc:
        raise ConntrackError(f"{' '.join(argv)} could not run: {exc.strerror or exc}") from None


def _message(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines) or f"exit status {returncode}"


def flush_addresses(addresses: Iterable[Address], timeout: float = TIMEOUT) -> None:
    """Delete every conntrack entry of the current network namespace whose original or reply
    source is one of `addresses` (Felix's fields; see the module docstring). No entry to delete
    is success. Raises ConntrackError when the tool is missing, keeps failing, or the whole
    flush does not finish within `timeout` seconds (then every invocation still running is killed)."""
    unique = list(dict.fromkeys(addresses))
    deadline = time.monotonic() + timeout
    if len(unique) <= BATCH:
        _run_all([_argv(address, direction) for address in unique for direction in DIRECTIONS], deadline, timeout, len(unique) * len(DIRECTIONS))
    else:
        _run_all(_matching_deletes(unique, deadline, timeout), deadline, timeout, PARALLEL)


def _matching_deletes(addresses: list[Address], deadline: float, timeout: float) -> list[list[str]]:
    """One `conntrack -L` of both families, and a delete (`-s <orig src> -d <orig dst>`) for each
    pair of an entry whose original or reply source is one of `addresses`."""
    argv = [CONNTRACK, "--dump"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=max(0.0, deadline - time.monotonic()))
    except FileNotFoundError:
        raise ConntrackError(f"{CONNTRACK} is not installed: install Debian's conntrack package (apt-get install conntrack)") from None
    except subprocess.TimeoutExpired:
        raise ConntrackError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise ConntrackError(f"{' '.join(argv)} failed: {_message(done.stderr, done.returncode)}")
    wanted = {str(a) for a in addresses}
    pairs: dict[tuple[str, str], None] = {}
    for line in done.stdout.splitlines():
        sources = [field[4:] for field in line.split() if field.startswith("src=")]
        destinations = [field[4:] for field in line.split() if field.startswith("dst=")]
        if len(sources) < 2 or not destinations:
            continue
        orig_src, reply_src = sources[0], sources[1]
        if orig_src in wanted or reply_src in wanted:
            pairs[(orig_src, destinations[0])] = None
    out = []
    for source, destination in pairs:
        family = "ipv6" if ":" in source else "ipv4"
        out.append([CONNTRACK, "--family", family, "--delete", "--orig-src", source, "--orig-dst", destination])
    return out


def _run_all(argvs: list[list[str]], deadline: float, timeout: float, parallel: int) -> None:
    """Run the tool with each of `argvs`, at most `parallel` at a time, retrying a run that lost a
    race with another delete, all within `deadline`."""
    waiting = list(argvs)
    running: list[tuple[list[str], subprocess.Popen, int]] = []
    try:
        while waiting or running:
            while waiting and len(running) < max(1, parallel):
                argv = waiting.pop(0)
                running.append((argv, _start(argv), 1))
            argv, proc, attempt = running.pop(0)
            try:
                _, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                running.append((argv, proc, attempt))
                raise ConntrackError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
            if proc.returncode == 0 or NOTHING_DELETED in stderr:
                continue
            if attempt >= ATTEMPTS:
                raise ConntrackError(f"{' '.join(argv)} failed {attempt} times: {_message(stderr, proc.returncode)}")
            running.append((argv, _start(argv), attempt + 1))
    finally:
        for _, proc, _ in running:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
