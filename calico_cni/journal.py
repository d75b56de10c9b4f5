"""The node-local release journal: what a DEL could not release because etcd was unreachable.

This module only keeps the files; finishing the releases they record is IPAM's job
(`calico_ipam.replay`).

Layout of the journal directory (`release_journal_dir`, default /var/lib/calico/cni-journal, mode
0700; every file 0600, written to a temporary name and renamed, so a reader never sees half of
one; `pending` files are also fsynced, so a crash keeps them):

- `held/<key>.json`: written by ADD once its addresses are committed. It records, for the
  attachment (network, containerID, ifname), the handle and each allocation as (block CIDR,
  ordinal, sequence number), plus the WorkloadEndpoint's namespace/name/uid. DEL needs exactly
  that when etcd is down: it cannot read the blocks then. Not fsynced: a machine crash can lose
  or truncate one, which DEL reads as no file (below), the case every older ADD already is; an
  fsync cost every ADD 1 to 7 ms (more on a busy disk) for nothing a DEL would do differently.
- `pending/<key>-<ns>.json`: a release DEL (or a failed ADD's rollback) could not do. It holds the
  same fields. Replaying it releases exactly those (block, ordinal, sequence) triples, so an
  address released and given to another pod meanwhile is never freed, and deletes the endpoint
  only if its uid is still the recorded one, so a newer sandbox's endpoint of the same name is
  kept. Repeating a replay changes nothing.

When DEL finds no `held` file (an ADD killed between its commit and the file, or an older
version), the entry has `allocations: null`; its replay resolves them at one revision and
releases only ordinals of (handle, ifname) whose allocation timestamp is older than the entry,
and only when no endpoint of that container exists: a later ADD of the same attachment keeps its
addresses.

No file here ever holds credentials: only names, addresses and the etcd endpoint URLs (which may
not carry credentials, see `config.etcd_settings`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

from calico_cni.timing import timed

try:
    # The interpreter's own SHA-256: hashlib loads OpenSSL, 3 ms of every in-process plugin run.
    from _sha256 import sha256
except ImportError:  # Python 3.12 and later name it _sha2
    try:
        from _sha2 import sha256
    except ImportError:  # an interpreter built without it
        from hashlib import sha256

log = logging.getLogger(__name__)

FORMAT = 1


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """A file-name-safe key of an attachment (names may hold characters a file name should not)."""
    return sha256(f"{network}/{container_id}/{ifname}".encode()).hexdigest()[:40]


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


@timed("journal")
def write_atomic(path: str, doc: dict, durable: bool = True) -> None:
    """Write JSON to `path` (mode 0600) under a temporary name, then rename it; with `durable`,
    fsync the file before the rename and the directory after it (it survives a crash)."""
    directory = os.path.dirname(path)
    _ensure_dir(os.path.dirname(directory))  # the journal root, then its held/ or pending/
    _ensure_dir(directory)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(doc, sort_keys=True).encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_entry(path: str) -> dict | None:
    """A journal file's document; None when it is gone or cannot be read (logged: an unreadable
    file must not stop the others)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("unreadable journal file %s: %s", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class Journal:
    """One journal directory."""

    root: str

    @property
    def held_dir(self) -> str:
        """Where each live attachment's holdings are recorded."""
        return os.path.join(self.root, "held")

    @property
    def pending_dir(self) -> str:
        """Where the releases still to finish are recorded."""
        return os.path.join(self.root, "pending")

    # -- held: what each live attachment holds --------------------------------------------------

    def held_path(self, network: str, container_id: str, ifname: str) -> str:
        """The held file of an attachment."""
        return os.path.join(self.held_dir, attachment_key(network, container_id, ifname) + ".json")

    def record_held(
        self, network: str, container_id: str, ifname: str, handle: str, allocations: Sequence, endpoints: Sequence[str], endpoint: dict | None = None
    ) -> None:
        """Remember what an ADD holds (called once the ADD's writes are committed). `endpoints`
        (the etcd URLs) is recorded for a person reading the file; a replay does not use it."""
        doc = {
            "format": FORMAT,
            "network": network,
            "containerID": container_id,
            "ifname": ifname,
            "handle": handle,
            "allocations": [{"address": str(a.address), "block": a.block, "ordinal": a.ordinal, "sequence": a.sequence} for a in allocations],
            "endpoint": endpoint,
            "etcdEndpoints": list(endpoints),
        }
        # Not durable: a held file lost in a crash is read as none (see the module docstring).
        write_atomic(self.held_path(network, container_id, ifname), doc, durable=False)

    def held(self, network: str, container_id: str, ifname: str) -> dict | None:
        """What an attachment holds, as its ADD recorded it (None: no record)."""
        return read_entry(self.held_path(network, container_id, ifname))

    def forget_held(self, network: str, container_id: str, ifname: str) -> None:
        """Drop an attachment's held file (its addresses were released)."""
        _unlink(self.held_path(network, container_id, ifname))

    def held_entries(self) -> list[tuple[str, dict]]:
        """Every held file as (path, document)."""
        out = []
        try:
            with os.scandir(self.held_dir) as it:
                names = [e.path for e in it if e.name.endswith(".json")]
        except FileNotFoundError:
            return []
        for path in names:
            doc = read_entry(path)
            if doc is not None:
                out.append((path, doc))
        return out

    # -- pending releases ----------------------------------------------------------------------

    def add_pending(
        self, network: str, container_id: str, ifname: str, handle: str, endpoints: Sequence[str], held: dict | None, endpoint: dict | None = None
    ) -> str:
        """Record a release to finish later; returns the entry's path. The held file is consumed.
        `endpoints` (the etcd URLs) is recorded for a person reading the file; a replay does not
        use it."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "network": network,
            "containerID": container_id,
            "ifname": ifname,
            "handle": handle,
            "allocations": held.get("allocations") if held else None,
            "endpoint": (held or {}).get("endpoint") or endpoint,
            "etcdEndpoints": list(endpoints),
            "recordedAt": time.time(),
        }
        path = os.path.join(self.pending_dir, f"{attachment_key(network, container_id, ifname)}-{time.time_ns()}.json")
        write_atomic(path, doc)
        self.forget_held(network, container_id, ifname)
        return path

    def pending(self) -> list[str]:
        """Paths of pending entries (cheap: one scandir; nothing when the directory is absent)."""
        try:
            with os.scandir(self.pending_dir) as it:
                return sorted(e.path for e in it if e.name.endswith(".json"))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def forget_pending(self, path: str) -> None:
        """Drop a pending entry (its release is finished)."""
        _unlink(path)
