"""The node-local release journal: what a DEL could not release because etcd was unreachable.

Layout of the journal directory (`release_journal_dir`, default /var/lib/calico/cni-journal, mode
0700; every file 0600, written with write + fsync + rename so a crash leaves the old file or the
new one, never half of one):

- `held/<key>.json`: written by ADD once its addresses are committed. It records, for the
  attachment (network, containerID, ifname), the handle and each allocation as (block CIDR,
  ordinal, sequence number), plus the WorkloadEndpoint's namespace/name/uid. DEL needs exactly
  that when etcd is down: it cannot read the blocks then.
- `pending/<key>-<ns>.json`: a release DEL (or a failed ADD's rollback) could not do. It holds the
  same fields. Replaying it is `release_exact` on those (block, ordinal, sequence) triples, so an
  address released and reused meanwhile is never freed (design rule 21), and deleting the endpoint
  only if its uid is still the recorded one (rule 4). Repeating a replay changes nothing.

When DEL finds no `held` file (an ADD killed between its commit and the file, or an older
version), the entry has `allocations: null`; its replay resolves them at one revision and
releases only ordinals of (handle, ifname) whose allocation timestamp is older than the entry,
and only when no endpoint of that container exists: a later ADD of the same attachment keeps its
addresses.

No file here ever holds credentials: only names, addresses and the etcd endpoint URLs (which may
not carry credentials, see `config.etcd_settings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

DEFAULT_JOURNAL_DIR = "/var/lib/calico/cni-journal"
FORMAT = 1


JOURNAL_DIR_ENV = "CALICO_RELEASE_JOURNAL_DIR"


def journal_dir(config: dict, environ: Mapping[str, str] | None = None) -> str:
    """The journal directory: `release_journal_dir`, else $CALICO_RELEASE_JOURNAL_DIR of
    `environ` (the request's environment; default this process's, as calicoctl reads it), else
    /var/lib/calico/cni-journal."""
    value = config.get("release_journal_dir")
    if value is None:
        return (os.environ if environ is None else environ).get(JOURNAL_DIR_ENV) or DEFAULT_JOURNAL_DIR
    if not isinstance(value, str) or not value.startswith("/"):
        from calico_cni.protocol.errors import INVALID_CONFIG, CniError

        raise CniError(INVALID_CONFIG, "release_journal_dir must be an absolute path", f"got {value!r}"[:120])
    return value


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """A file-name-safe key of an attachment (names may hold characters a file name should not)."""
    return hashlib.sha256(f"{network}/{container_id}/{ifname}".encode()).hexdigest()[:40]


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def write_atomic(path: str, doc: dict, sync_dir: bool = True) -> None:
    """Write JSON to `path` with write + fsync + rename (mode 0600)."""
    directory = os.path.dirname(path)
    _ensure_dir(os.path.dirname(directory))  # the journal root, then its held/ or pending/
    _ensure_dir(directory)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(doc, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if sync_dir:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("unreadable journal file %s: %s", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


@dataclass
class Journal:
    """One journal directory."""

    root: str

    @property
    def held_dir(self) -> str:
        return os.path.join(self.root, "held")

    @property
    def pending_dir(self) -> str:
        return os.path.join(self.root, "pending")

    # -- held: what each live attachment holds --------------------------------------------------

    def held_path(self, network: str, container_id: str, ifname: str) -> str:
        return os.path.join(self.held_dir, attachment_key(network, container_id, ifname) + ".json")

    def record_held(self, network: str, container_id: str, ifname: str, handle: str, allocations: Sequence, endpoints: Sequence[str], endpoint: dict | None = None) -> None:
        """Remember what an ADD holds (called once the ADD's writes are committed)."""
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
        write_atomic(self.held_path(network, container_id, ifname), doc, sync_dir=False)

    def held(self, network: str, container_id: str, ifname: str) -> dict | None:
        return _read(self.held_path(network, container_id, ifname))

    def forget_held(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.held_path(network, container_id, ifname))
        except FileNotFoundError:
            pass

    def held_entries(self) -> list[tuple[str, dict]]:
        """Every held file as (path, document)."""
        out = []
        try:
            with os.scandir(self.held_dir) as it:
                names = [e.path for e in it if e.name.endswith(".json")]
        except FileNotFoundError:
            return []
        for path in names:
            doc = _read(path)
            if doc is not None:
                out.append((path, doc))
        return out

    # -- pending releases ----------------------------------------------------------------------

    def add_pending(self, network: str, container_id: str, ifname: str, handle: str, endpoints: Sequence[str], held: dict | None, endpoint: dict | None = None) -> str:
        """Record a release to finish later; returns the entry's path. The held file is consumed."""
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

    def replay(self, store, endpoints: Sequence[str] = ()) -> int:
        """Finish every pending release; returns how many were finished. An entry whose replay
        fails stays for the next invocation. Entries are not filtered by the etcd endpoints they
        record (a DEL may have found etcd down under another URL): a replay on the wrong cluster
        would need the same block, ordinal and nanosecond sequence number to free anything."""
        done = 0
        for path in self.pending():
            doc = _read(path)
            if doc is None:
                continue
            replay_entry(store, doc)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            done += 1
            log.info("replayed pending release of %s/%s (%s)", doc.get("handle"), doc.get("ifname"), os.path.basename(path))
        return done


def replay_entry(store, doc: dict) -> None:
    """Release what one pending entry names; safe to repeat."""
    from calico_cni.model.records import parse_time
    from calico_ipam.allocator import Assigned, release_exact
    from calico_ipam import blocks as blk

    handle_id = doc["handle"]
    allocations = doc.get("allocations")
    endpoint = doc.get("endpoint") or None
    if allocations is None:
        # No record of the exact allocations: resolve them now, conservatively.
        if endpoint is None and _container_has_endpoint(store, doc):
            log.info("pending release of %s: the container has an endpoint again; left alone", handle_id)
            return
        handle = store.handle(handle_id)
        wanted = []
        if handle is not None:
            for cidr, block in store.blocks(sorted(handle.blocks)).items():
                for o in blk.ordinals_of(block, handle_id, doc.get("ifname")):
                    stamp = parse_time(((block.attribute(o) or {}).get("secondary") or {}).get("timestamp"))
                    if stamp is not None and stamp < float(doc.get("recordedAt") or 0):
                        wanted.append(Assigned(block.address(o), cidr, o, block.seq_for_alloc.get(str(o))))
        allocations_objs = wanted
    else:
        import ipaddress

        allocations_objs = [Assigned(ipaddress.ip_address(a["address"]), a["block"], int(a["ordinal"]), a.get("sequence")) for a in allocations]
    if allocations_objs:
        release_exact(store, handle_id, allocations_objs)
    if endpoint:
        ep = store.workload_endpoint(endpoint["namespace"], endpoint["name"])
        if ep is not None and (ep.doc.get("metadata") or {}).get("uid") == endpoint.get("uid"):
            store.commit(deletes=[ep])


def _container_has_endpoint(store, doc: dict) -> bool:
    cid, ifname = doc.get("containerID"), doc.get("ifname")
    for ep in store.workload_endpoints():
        spec = ep.spec
        if spec.get("containerID") == cid and spec.get("endpoint", ifname) == ifname:
            return True
    return False


def replay_quietly(config: dict, store, endpoints: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> None:
    """Replay pending releases; call it BEFORE a verb's own datastore work, so that an ADD of an
    attachment with a pending release never gets the stale allocation back as "already held".

    Cheap when nothing is pending (one scandir). etcd being unreachable is raised (the verb could
    not work either); any other failure is logged and left for the next invocation.
    """
    from calico_cni.datastore.etcd import DatastoreUnavailable

    try:
        journal = Journal(journal_dir(config, environ))
        if journal.pending():
            journal.replay(store, endpoints)
    except DatastoreUnavailable:
        raise
    except Exception:  # noqa: BLE001 - the journal is retried by the next invocation
        log.exception("replaying the release journal failed; the next invocation tries again")
