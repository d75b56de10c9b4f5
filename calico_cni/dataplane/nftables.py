"""nftables through Debian's libnftables (nftables 1.0.6, `libnftables.so.1`) in this process,
and tables listed by its `nft` command: the only code that runs nftables.

Rulesets are applied in-process because calico-node applies one before answering every ADD and DEL
it serves: from a 72 MB process, exec'ing `nft -f -` for a 3-line script took 16 ms, the same
script through libnftables 0.22 ms (a delta to a 1,000-endpoint table: 11.5 ms against 4.3 ms).

A ruleset script is run the way `nft -f` runs a file (`nft_run_cmd_from_filename`, on a memfd
holding the script), so nft applies it as one transaction: either every line takes effect or none
does (a table is never seen half written). Its errors name the line, as nft's did (the library's
buffer entry point would print the first line of a multi-line script instead of the offending one).

Namespaces: libnftables opens a context's netfilter socket in `nft_ctx_new` (src/libnftables.c),
so a context stays in the network namespace of the thread that created it, wherever the thread
goes later. Every call here acts in the namespace its calling thread is in at that moment (as the
exec'd nft did; calico-node's threads enter pods' namespaces), through one context per namespace,
keyed by the inode of /proc/thread-self/ns/net. A context's socket keeps its namespace alive, so
only the MAX_CONTEXTS most recently used are kept.

Threads: besides its contexts, libnftables keeps process-wide state (in the 1.0.2 source read for
this: src/mnl.c's ruleset generation every cache dump is checked against, src/iface.c's interface
cache, which every call frees at its end, nft_ctx_new's one-time set-up), so no two calls may run
at once, in any context: one lock serializes them (ctypes lets other Python threads run meanwhile).

That is why tables are listed by an `nft -s list table` process instead (`-s`, stateless: counter
values and set elements' timeouts left out, so two listings of an unchanged table give the same
text): listing a 1,000-endpoint table takes ~90 ms in the library, and calico-node's loop lists
its tables after every write, while requests apply. Under the lock, a request's apply waited for
those listings: with a 1,000-endpoint table written every 100 ms and listed twice after each
write, a request's apply took 93 ms (median; p90 236 ms) against 10.8 ms with the listings in
their own processes beside it (14.7 ms when both were exec'd).

No deadline for an apply: a call in this process cannot be killed. The kernel answers netlink in
milliseconds; the exec'd nft's timeout was there for a wedged process, and listings keep it.
libnftables exits the process when it cannot open a netlink socket, so a context is only made
after a socket of ours opened. Every failure is one `NftError` line carrying nftables' own message.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import subprocess
import threading
from collections import OrderedDict

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.rtnl import NetlinkError, Rtnl, parse_attrs

LIBRARY = "libnftables.so.1"
NFT = "nft"
# nft lists a large table in a fraction of a second; this only bounds a wedged one.
TIMEOUT = 10.0
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
# Namespaces whose context is kept: calico-node needs one (its own); tests use a few at a time.
MAX_CONTEXTS = 4

# nftables/libnftables.h (1.0.6): the output flag of nft's -j.
OUTPUT_JSON = 1 << 4

# nfnetlink: nftables' subsystem, its "get generation" request and the generation id attribute.
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1

# What `nft -f -` called its script in messages ("/dev/stdin:4:28-28: Error: ..."): the memfd's
# path is replaced with it, so messages read as they always did.
SCRIPT_NAME = "/dev/stdin"


class NftError(DataplaneError):
    """nftables refused a ruleset or a listing, could not run, or nft did not finish in time."""


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_contexts: OrderedDict[tuple[int, int], int] = OrderedDict()  # namespace (dev, inode) -> nft_ctx *


def _load() -> ctypes.CDLL:
    """libnftables with the prototypes used here (under the lock)."""
    global _library
    if _library is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError:
            raise NftError(f"libnftables ({LIBRARY}) is not installed: install Debian's nftables package (apt-get install nftables)") from None
        ctx = ctypes.c_void_p
        lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], ctx
        lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [ctx], None
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes, getattr(lib, name).restype = [ctx], ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes, getattr(lib, name).restype = [ctx], ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes, lib.nft_ctx_output_set_flags.restype = [ctx, ctypes.c_uint], None
        for name in ("nft_run_cmd_from_buffer", "nft_run_cmd_from_filename"):
            getattr(lib, name).argtypes, getattr(lib, name).restype = [ctx, ctypes.c_char_p], ctypes.c_int
        _library = lib
    return _library


def _context(lib: ctypes.CDLL) -> int:
    """The context of the calling thread's network namespace, made on first use (under the lock)."""
    info = os.stat("/proc/thread-self/ns/net")
    key = (info.st_dev, info.st_ino)
    ctx = _contexts.get(key)
    if ctx is not None:
        _contexts.move_to_end(key)
        return ctx
    # nft_ctx_new exits the process when it cannot open its socket (netlink_init_error): the same
    # socket opened here first turns the usual causes (no nf_tables, no descriptors) into an error.
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).close()
    except OSError as exc:
        raise NftError(f"cannot open a netfilter netlink socket: {exc.strerror or exc}") from None
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise NftError("libnftables could not make a context")
    if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
        lib.nft_ctx_free(ctx)
        raise NftError("libnftables could not buffer its output")
    _contexts[key] = ctx
    while len(_contexts) > MAX_CONTEXTS:
        lib.nft_ctx_free(_contexts.popitem(last=False)[1])
    return ctx


def _run(command: str = "", script: str | None = None, flags: int = 0) -> tuple[int, str, str]:
    """Run `command` (one line, as nft's arguments) or `script` (as `nft -f` runs a file) through
    libnftables with the output `flags`, in the calling thread's namespace: (return code, output,
    errors)."""
    with _lock:
        lib = _load()
        ctx = _context(lib)
        lib.nft_ctx_output_set_flags(ctx, flags)
        path = ""
        if script is None:
            rc = lib.nft_run_cmd_from_buffer(ctx, command.encode())
        else:
            fd = os.memfd_create("nft-ruleset", os.MFD_CLOEXEC)
            try:
                data = memoryview(script.encode())
                while data:  # all of it: a script cut short would still be applied, as one
                    data = data[os.write(fd, data) :]
                path = f"/proc/self/fd/{fd}"
                rc = lib.nft_run_cmd_from_filename(ctx, path.encode())
            finally:
                os.close(fd)
        # Both buffers are read after every run: reading is what rewinds them for the next one.
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    if path:
        err = err.replace(path, SCRIPT_NAME)
    return rc, out, err


def _message(rc: int, out: str, err: str) -> str:
    """nftables' complaint (`err`, else `out`) on one line (it writes the error, then the
    offending line and a caret line)."""
    lines = [line.strip() for line in (err or out).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error") or ": Error" in line]
    return "; ".join(errors or lines[:1]) or f"return code {rc}"


def _check_name(family: str, name: str) -> None:
    if family not in FAMILIES:
        raise NftError(f"{family!r} is not an nftables family (one of {', '.join(FAMILIES)})")
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise NftError(f"{name!r} is not a table name nft accepts here (letters, digits, '_', '-', '.')")


def apply(text: str) -> None:
    """Run the ruleset script `text` as `nft -f` would: one transaction, all of it or nothing."""
    rc, out, err = _run(script=text)
    if rc != 0:
        raise NftError(f"nft refused the ruleset (nothing of it was applied): {_message(rc, out, err)}")


def _exec(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    what = " ".join([NFT, *args])
    try:
        return subprocess.run([NFT, *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NftError(f"{NFT} is not installed: install Debian's nftables package (apt-get install nftables)") from None
    except subprocess.TimeoutExpired:
        raise NftError(f"{what} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise NftError(f"{what} could not run: {exc.strerror or exc}") from None


def list_table(family: str, name: str, timeout: float = TIMEOUT) -> str | None:
    """`nft -s list table <family> <name>`'s text (without counter values), or None when the
    table does not exist. An nft process, beside any apply of ours (see the module's docstring)."""
    _check_name(family, name)
    proc = _exec(["-s", "list", "table", family, name], timeout)
    if proc.returncode != 0:
        message = _message(proc.returncode, proc.stdout, proc.stderr)
        if "No such file or directory" in message:
            return None
        raise NftError(f"nft could not list table {family} {name}: {message}")
    return proc.stdout


def dropping_chains(hooks: tuple[str, ...] = ("forward", "input"), exclude: str = "calico") -> list[str]:
    """The base chains of other tables on `hooks` whose policy is drop (ours: `ip` and `ip6`
    `exclude`), as "<family> <table> <chain> (hook <hook>)": an accept in our tables does not stop
    them, so they drop what our policy allows (reported, never changed)."""
    rc, out, err = _run("list chains", flags=OUTPUT_JSON)
    if rc != 0:
        raise NftError(f"nft could not list the chains: {_message(rc, out, err)}")
    try:
        items = json.loads(out).get("nftables") or []
    except (ValueError, AttributeError):
        raise NftError("nft listed the chains in JSON nft itself cannot have written") from None
    found = []
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        ours = chain.get("table") == exclude and chain.get("family") in ("ip", "ip6") if isinstance(chain, dict) else False
        if isinstance(chain, dict) and chain.get("hook") in hooks and chain.get("policy") == "drop" and not ours:
            found.append(f"{chain.get('family')} {chain.get('table')} {chain.get('name')} (hook {chain.get('hook')})")
    return sorted(found)


_generation_lock = threading.Lock()
_generation_sockets: OrderedDict[tuple[int, int], Rtnl] = OrderedDict()  # namespace -> its socket


def generation() -> int:
    """The ruleset's generation id: the kernel adds one at every nftables commit, by anyone, in
    the calling thread's network namespace. One netlink round trip (~0.03 ms), where listing a
    large table takes most of a second: an unchanged generation says no table changed at all.
    (libnftables has no way to give it; the request is four bytes over our own netlink client.)

    The socket is kept, one per namespace (as libnftables' contexts): on a socket opened for it,
    the request right after a commit that deleted rules or chains took 10 to 15 ms (kernel 6.18),
    on a kept one 0.02 to 0.05 ms; calico-node reads the generation right after each of its
    writes, before a request answers."""
    info = os.stat("/proc/thread-self/ns/net")
    key = (info.st_dev, info.st_ino)
    with _generation_lock:
        try:
            nl = _generation_sockets.get(key)
            if nl is None:
                nl = _generation_sockets[key] = Rtnl.open(NETLINK_NETFILTER)
                while len(_generation_sockets) > MAX_CONTEXTS:
                    _generation_sockets.popitem(last=False)[1].close()
            _generation_sockets.move_to_end(key)
            answer = nl.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, b"\0\0\0\0", what="nftables generation")
        except (NetlinkError, OSError) as exc:
            # A socket in an unknown state (a late answer queued, an error) is not used again.
            dropped = _generation_sockets.pop(key, None)
            if dropped is not None:
                dropped.close()
            raise NftError(f"cannot read the nftables generation: {exc}") from None
    for _, payload in answer:
        raw = parse_attrs(payload, 4).get(NFTA_GEN_ID)  # after the 4-byte nfgenmsg header
        if raw is not None and len(raw) >= 4:
            return struct.unpack(">I", raw[:4])[0]
    raise NftError("the kernel answered the nftables generation request without one")
