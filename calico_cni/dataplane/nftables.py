"""nftables through Debian's `nft` binary (nftables 1.0.6): the only code that runs it.

A ruleset script is fed to `nft -f -` whole, so nft applies it as one transaction: either every
line takes effect or none does (a table is never seen half written). Tables are read back with
`nft -s list table`: `-s` (stateless) leaves counter values and set elements' timeouts out, so two
listings of an unchanged table give the same text and can be compared.

Every run has a deadline (a wedged nft is reported, never waited for), and every failure is one
`NftError` line carrying nft's own message.
"""

from __future__ import annotations

import json
import struct
import subprocess

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.rtnl import NetlinkError, Rtnl, parse_attrs

# nft applies a ruleset of a few hundred lines in milliseconds; this only bounds a wedged one.
TIMEOUT = 10.0
NFT = "nft"
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")


# nfnetlink: nftables' subsystem, its "get generation" request and the generation id attribute.
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1


class NftError(DataplaneError):
    """nft refused a ruleset or a listing, could not run, or did not finish in time."""


def _run(args: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess:
    what = " ".join([NFT, *args])
    try:
        return subprocess.run([NFT, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NftError(f"{NFT} is not installed: install Debian's nftables package (apt-get install nftables)") from None
    except subprocess.TimeoutExpired:
        raise NftError(f"{what} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise NftError(f"{what} could not run: {exc.strerror or exc}") from None


def _message(proc: subprocess.CompletedProcess) -> str:
    """nft's complaint on one line (it writes the error, then the offending line and a caret line)."""
    lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error") or ": Error" in line]
    return "; ".join(errors or lines[:1]) or f"exit status {proc.returncode}"


def _check_name(family: str, name: str) -> None:
    if family not in FAMILIES:
        raise NftError(f"{family!r} is not an nftables family (one of {', '.join(FAMILIES)})")
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise NftError(f"{name!r} is not a table name nft accepts here (letters, digits, '_', '-', '.')")


def apply(text: str, timeout: float = TIMEOUT) -> None:
    """Run the ruleset script `text` with `nft -f -`: one transaction, all of it or nothing."""
    proc = _run(["-f", "-"], text, timeout)
    if proc.returncode != 0:
        raise NftError(f"nft refused the ruleset (nothing of it was applied): {_message(proc)}")


def list_table(family: str, name: str, timeout: float = TIMEOUT) -> str | None:
    """`nft -s list table <family> <name>`'s text (without counter values), or None when the
    table does not exist."""
    _check_name(family, name)
    proc = _run(["-s", "list", "table", family, name], None, timeout)
    if proc.returncode != 0:
        message = _message(proc)
        if "No such file or directory" in message:
            return None
        raise NftError(f"nft could not list table {family} {name}: {message}")
    return proc.stdout


def dropping_chains(hooks: tuple[str, ...] = ("forward", "input"), exclude: str = "calico", timeout: float = TIMEOUT) -> list[str]:
    """The base chains of other tables on `hooks` whose policy is drop (ours: `ip` and `ip6`
    `exclude`), as "<family> <table> <chain> (hook <hook>)": an accept in our tables does not stop
    them, so they drop what our policy allows (reported, never changed)."""
    proc = _run(["-j", "list", "chains"], None, timeout)
    if proc.returncode != 0:
        raise NftError(f"nft could not list the chains: {_message(proc)}")
    try:
        items = json.loads(proc.stdout).get("nftables") or []
    except (ValueError, AttributeError):
        raise NftError("nft listed the chains in JSON nft itself cannot have written") from None
    found = []
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        ours = chain.get("table") == exclude and chain.get("family") in ("ip", "ip6") if isinstance(chain, dict) else False
        if isinstance(chain, dict) and chain.get("hook") in hooks and chain.get("policy") == "drop" and not ours:
            found.append(f"{chain.get('family')} {chain.get('table')} {chain.get('name')} (hook {chain.get('hook')})")
    return sorted(found)


def generation() -> int:
    """The ruleset's generation id: the kernel adds one at every nftables commit, by anyone, in
    this network namespace. One netlink round trip (~0.1 ms), where listing a large table takes
    most of a second: an unchanged generation says no table changed at all. (The nft command has
    no way to print it; the request is four bytes over our own netlink client.)"""
    try:
        with Rtnl.open(NETLINK_NETFILTER) as nl:
            answer = nl.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, b"\0\0\0\0", what="nftables generation")
    except (NetlinkError, OSError) as exc:
        raise NftError(f"cannot read the nftables generation: {exc}") from None
    for _, payload in answer:
        raw = parse_attrs(payload, 4).get(NFTA_GEN_ID)  # after the 4-byte nfgenmsg header
        if raw is not None and len(raw) >= 4:
            return struct.unpack(">I", raw[:4])[0]
    raise NftError("the kernel answered the nftables generation request without one")
