"""create, apply, replace, delete, patch, label and get over every resource kind, as calicoctl
does them, each driven by the kind's description (`model.kinds`), never by per-kind copies.

- Every document of a file is decoded and checked first (`resources.documents`); then the file is
  written in one etcd transaction when it fits (etcd's default limit is 128 operations), so a
  failure writes nothing. A larger file is written document by document in file order, and a
  failure raises `PartialSuccess` saying how many were written.
- Optimistic concurrency as Calico: `metadata.resourceVersion` is the key's etcd mod revision; a
  stale one in the file is an update conflict. Without one, apply and replace update the latest
  (re-read and retried when another writer got there first). `uid` and `creationTimestamp` are set
  on create and never changed.
- An apply or replace that would not change the stored resource writes nothing, so watchers see no
  event.
- Rules that need other stored resources: IP pools may not overlap (checked against every pool, with
  the pools' prefix in the transaction's compares, so a concurrent pool cannot slip in); a policy's
  tier must exist (the default tier is created with Calico's defaults along with the first policy
  that needs it, as calico-node's initialisation would have); the default tier and tiers that still
  hold policies are not deleted.
- Deleting an IP pool or a node does more than delete a key (`resources.removal`).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.store import Datastore
from calico_cni.model import checks, kinds
from calico_cni.model.keys import POOLS
from calico_cni.model.kinds.ipam import IPPOOL
from calico_cni.model.kinds.policy import TIER
from calico_cni.model.kinds.routing import BGP_CONFIGURATION, BGP_FILTER
from calico_cni.model.resource import DEFAULT_TIER, Resource, tier_of
from calico_cni.model.resource import key as resource_key
from calico_cni.model.resource import prefix as naming_prefix
from calico_cni.model.schema import Invalid, Kind

from calico_cni.resources import removal
from calico_cni.resources.documents import Document
from calico_cni.resources.errors import (
    AlreadyExists,
    BadDocument,
    DoesNotExist,
    PartialSuccess,
    Refused,
    ResourceError,
    UpdateConflict,
)

# etcd's default --max-txn-ops: a transaction holds at most this many compares and this many writes.
MAX_TXN_OPS = 128
# How often a write is re-read and retried after another writer changed what it read.
ATTEMPTS = 5
# What calico-node's initialisation writes for the default tier (Calico v3.30).
DEFAULT_TIER_SPEC = {"order": 1000000, "defaultAction": "Deny"}
UNDELETABLE_TIERS = ("default", "adminnetworkpolicy")
# What calicoctl takes from a file's metadata: on create (the rest is dropped, uid and
# creationTimestamp are new), and on update (the rest stays the stored one).
CREATE_METADATA = ("name", "namespace", "labels", "annotations")
UPDATE_METADATA = ("labels", "annotations")
# The AS number of nodes when no BGPConfiguration sets one (Calico's default).
DEFAULT_AS_NUMBER = 64512


@dataclass
class Outcome:
    """What a verb did: documents handled (written, unchanged or skipped), in file order."""

    written: int = 0
    unchanged: int = 0
    skipped: int = 0
    kinds: list[str] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Written, unchanged or skipped."""
        return self.written + self.unchanged + self.skipped

    def add(self, other: "Outcome") -> None:
        """Count `other`'s documents as handled too."""
        self.written += other.written
        self.unchanged += other.unchanged
        self.skipped += other.skipped
        self.kinds += [k for k in other.kinds if k not in self.kinds]
        self.resources += other.resources


def now() -> str:
    """A creationTimestamp as Calico writes one (RFC 3339, seconds, UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref_of(document: Document) -> Ref:
    """Which stored resource a document is about."""
    meta = document.doc["metadata"]
    return Ref(document.kind, meta["name"], meta.get("namespace") if document.kind.namespaced else None)


def _readonly(verb: str, kind: Kind, name: str | None = None) -> None:
    if not kind.writable:
        raise Refused(f"operation {verb} is not supported on {kind.name}: resource is readonly")
    for name_prefix, reason in kind.managed_elsewhere:
        if name is not None and name.startswith(name_prefix):
            raise Refused(f"operation {verb} is not supported on {kind.name}({name}): {reason}")
    if name is not None and stored.builtin(kind, name) is not None:
        raise Refused(f"operation {verb} is not supported on {kind.name}({name}): it is Calico's built-in profile, which allows everything")


def _read_normalised(resource: Resource) -> dict[str, Any]:
    """The document as a read of the stored record would show it (so a document and the stored
    record it equals compare equal)."""
    return Resource.from_stored(resource.kind, resource.to_json(), 0).doc


# -- planning one batch ------------------------------------------------------------------------


@dataclass
class _Plan:
    """One batch's writes, and what must not have moved since it was read."""

    puts: list[Resource] = field(default_factory=list)
    deletes: list[Resource] = field(default_factory=list)
    unchanged: list[Resource] = field(default_factory=list)
    prefixes: list[tuple[str, int]] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)


def _created(document: Document) -> Resource:
    """A new resource from a file's document: of its metadata only the name, namespace, labels and
    annotations are taken (as calicoctl prepares a create); uid and creationTimestamp are new."""
    doc = copy.deepcopy(document.doc)
    meta = {key: doc["metadata"][key] for key in CREATE_METADATA if key in doc["metadata"]}
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    doc["metadata"] = meta
    return Resource(document.kind, doc, 0)


def _updated(document: Document, current: Resource) -> Resource:
    """The file's document over the stored one, as calicoctl merges an update: the stored metadata
    stays (uid, creationTimestamp, and whatever else it holds) except the labels and annotations,
    which are the file's; a top-level part the file does not give (a node's status) is kept."""
    doc = copy.deepcopy(document.doc)
    meta = copy.deepcopy(current.doc.get("metadata") or {})
    for key in UPDATE_METADATA:
        if key in doc["metadata"]:
            meta[key] = doc["metadata"][key]
        else:
            meta.pop(key, None)
    meta.pop("resourceVersion", None)
    doc["metadata"] = meta
    for key, value in current.doc.items():
        if key not in doc:
            doc[key] = copy.deepcopy(value)
    if document.kind.immutable is not None:
        reason = document.kind.immutable(current.doc, doc)
        if reason:
            raise Refused(f"{_label(document)}: {reason}")
    return Resource(document.kind, doc, current.revision)


def _label(document: Document) -> str:
    return f"{document.source} ({ref_of(document).identifier})"


def _conflict(document: Document, given: str, current: Resource) -> UpdateConflict:
    return UpdateConflict(
        f"update conflict: {current.identifier}: resource version '{given}' in {document.source} is out of date "
        f"(latest: {current.revision}); get the resource again and make the change on it"
    )


def _plan_writes(verb: str, documents: Sequence[Document], current: Sequence[Resource | None], skip_exists: bool) -> _Plan:
    plan = _Plan()
    for document, existing in zip(documents, current):
        given = document.resource_version
        if verb == "create" and given:
            raise BadDocument(f"{_label(document)}: metadata.resourceVersion must not be set for a create: remove it, or use apply")
        if existing is not None and given and given != str(existing.revision):
            raise _conflict(document, given, existing)
        if verb == "create" or (verb == "apply" and existing is None):
            if existing is not None:
                if skip_exists:
                    plan.outcome.skipped += 1
                    continue
                raise AlreadyExists(f"resource already exists: {existing.identifier} ({document.source})")
            new = _created(document)
            plan.puts.append(new)
        else:
            if existing is None:
                raise DoesNotExist(f"resource does not exist: {ref_of(document).identifier} ({document.source})")
            new = _updated(document, existing)
            if _read_normalised(new) == existing.doc:
                plan.unchanged.append(existing)
                plan.outcome.unchanged += 1
                plan.outcome.resources.append(existing)
                _note_kind(plan.outcome, document.kind)
                continue
            plan.puts.append(new)
        plan.outcome.written += 1
        plan.outcome.resources.append(new)
        _note_kind(plan.outcome, document.kind)
    return plan


def _note_kind(outcome: Outcome, kind: Kind) -> None:
    if kind.name not in outcome.kinds:
        outcome.kinds.append(kind.name)


# -- rules that need other stored resources ------------------------------------------------------


def _check_pools(store: Datastore, plan: _Plan) -> None:
    """A new or changed pool may not share an address with another pool (stored, or in the file)."""
    pools = [r for r in plan.puts if r.kind is IPPOOL]
    if not pools:
        return
    existing, revision = stored.list_kind(store, IPPOOL)
    plan.prefixes.append((POOLS, revision))
    others = {r.name: r for r in existing}
    for pool in pools:
        others[pool.name] = pool
    nets = {}
    for name, r in others.items():
        try:
            nets[name] = ipaddress.ip_network(r.doc.get("spec", {}).get("cidr"), strict=False)
        except (TypeError, ValueError):
            continue
    for pool in pools:
        mine = nets[pool.name]
        for name, net in sorted(nets.items()):
            if name != pool.name and net.version == mine.version and net.overlaps(mine):
                raise Refused(f"IPPool({pool.name}) CIDR {mine} overlaps with IPPool({name}) CIDR {net}")
    _check_block_sizes(store, [p for p in pools if p.revision == 0], nets)


def _check_block_sizes(store: Datastore, new_pools: Sequence[Resource], nets: dict) -> None:
    """A new pool's block size must be that of the blocks already inside its CIDR (left by an
    earlier pool with another block size), as Calico's pool creation checks."""
    blocks: dict[int, set[str]] = {}
    for pool in new_pools:
        mine = nets[pool.name]
        size = pool.doc["spec"]["blockSize"]
        if mine.version not in blocks:
            blocks[mine.version] = store.block_cidrs(mine.version)
        for cidr in sorted(blocks[mine.version]):
            block = ipaddress.ip_network(cidr, strict=False)
            if block.overlaps(mine) and block.prefixlen != size:
                raise Refused(
                    f"IPPool({pool.name}) blockSize {size} conflicts with existing allocations that use a different blockSize: "
                    f"block {block} is a /{block.prefixlen}; release its addresses first or use blockSize {block.prefixlen}"
                )


def new_resource(kind: Kind, name: str, spec: dict[str, Any]) -> Resource:
    """A resource to create, as Calico's own writers make one: a new uid and creationTimestamp."""
    doc = {
        "apiVersion": kinds.API_VERSION,
        "kind": kind.name,
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
        "spec": spec,
    }
    return Resource(kind, doc, 0)


def _missing_dependencies(store: Datastore, plan: _Plan, kind: Kind, wanted: set[str]) -> list[str]:
    """Which of the resources `wanted` (of `kind`) that the plan's writes need exist neither
    in the plan nor stored, sorted. The stored ones join the transaction's compares, so one deleted
    meanwhile makes the write retry."""
    names = sorted(wanted - {r.name for r in plan.puts if r.kind is kind})
    found, _ = stored.read(store, [Ref(kind, n) for n in names])
    plan.unchanged.extend(r for r in found if r is not None)
    return [n for n, r in zip(names, found) if r is None]


def _check_tiers(store: Datastore, plan: _Plan) -> None:
    """A policy's tier must exist; the default tier is written along with the first policy that
    needs it when nothing has created it yet (Calico's initialisation creates it)."""
    wanted = {r.doc["spec"].get("tier") or tier_of(r.name) for r in plan.puts if r.kind.tiered}
    missing = _missing_dependencies(store, plan, TIER, wanted)
    if DEFAULT_TIER in missing:
        missing.remove(DEFAULT_TIER)
        plan.puts.insert(0, new_resource(TIER, DEFAULT_TIER, dict(DEFAULT_TIER_SPEC)))
    if missing:
        raise Refused(f"resource does not exist: Tier({missing[0]}): create the tier before its policies")


def _check_filters(store: Datastore, plan: _Plan) -> None:
    """The BGPFilters a BGPPeer names must exist (stored, or in the file), as Calico's client checks."""
    wanted = {f for r in plan.puts if r.kind.name == "BGPPeer" for f in (r.doc.get("spec") or {}).get("filters") or []}
    missing = _missing_dependencies(store, plan, BGP_FILTER, wanted)
    if missing:
        raise Refused(f"BGPFilter(s) not found: {', '.join(missing)}: create the filters before the peers that use them")


def _check_rules(store: Datastore, plan: _Plan) -> None:
    """The rules a write of `plan` must keep that need other stored resources."""
    _check_pools(store, plan)
    _check_tiers(store, plan)
    _check_filters(store, plan)


# -- running batches ---------------------------------------------------------------------------


class _TooLarge(Exception):
    """A batch whose transaction would exceed etcd's limit (it is then split document by document)."""


def _fits(plan: _Plan) -> bool:
    """Whether the plan's writes and its compares each fit one etcd transaction."""
    writes = len(plan.puts) + len(plan.deletes)
    compares = writes + len(plan.unchanged) + len(plan.prefixes)
    return writes <= MAX_TXN_OPS and compares <= MAX_TXN_OPS


def _run(store: Datastore, what: str, attempt_batch: Callable[[], _Plan]) -> Outcome:
    """Plan and commit one batch, re-reading and planning again when another writer got in between.
    `_TooLarge` when the batch does not fit one transaction."""
    for _ in range(ATTEMPTS):
        plan = attempt_batch()
        if not plan.puts and not plan.deletes:
            return plan.outcome
        if not _fits(plan):
            raise _TooLarge()
        if store.commit(puts=plan.puts, deletes=plan.deletes, unchanged=plan.unchanged, prefixes_unchanged_since=plan.prefixes):
            return plan.outcome
    raise UpdateConflict(f"update conflict: {what} kept changing while being written ({ATTEMPTS} attempts); try again")


def _batches(keys: Sequence[str]) -> list[list[int]]:
    """The items (by index) as one batch when they may fit one transaction, else one batch per item.
    Items naming one resource twice are also taken one by one, so the second acts on what the first
    did (as calicoctl, which works in file order). A batch that turns out too large once planned
    (the resources it reads add compares) is split later (`_TooLarge`)."""
    if len(keys) + 2 <= MAX_TXN_OPS and len(set(keys)) == len(keys):
        return [list(range(len(keys)))]
    return [[i] for i in range(len(keys))]


def _partial(done_word: str, exc: ResourceError, done: int, total: int) -> ResourceError:
    """`exc` as it ends a multi-document verb: a Partial success when something was done."""
    if not done:
        return exc
    return PartialSuccess(f"Partial success: {done_word} the first {done} out of {total} resources; then {exc}", done=done, total=total)


def _in_batches(done_word: str, items: Sequence[Any], keys: Sequence[str], run_batch: Callable[[list[Any]], Outcome], total: Outcome, of: int) -> None:
    """Run `items` (whose keys are `keys`) through `run_batch`: one transaction when they fit, else
    one by one, adding to `total`; a failure after something was done (counting `total`'s earlier
    documents, out of `of`) is a Partial success."""
    batches = [[items[i] for i in batch] for batch in _batches(keys)]
    if len(batches) == 1:
        try:
            total.add(run_batch(batches[0]))
            return
        except _TooLarge:
            batches = [[item] for item in items]
        except ResourceError as exc:
            raise _partial(done_word, exc, total.handled, of) from None
    for batch in batches:
        try:
            total.add(run_batch(batch))
        except ResourceError as exc:
            raise _partial(done_word, exc, total.handled, of) from None


def write(store: Datastore, verb: str, documents: Sequence[Document], skip_exists: bool = False) -> Outcome:
    """create, apply or replace `documents` (verb "create", "apply" or "replace")."""
    for document in documents:
        _readonly(verb, document.kind, document.doc["metadata"]["name"])

    def batch(docs: list[Document]) -> Outcome:
        def attempt() -> _Plan:
            current, _ = stored.read(store, [ref_of(d) for d in docs])
            plan = _plan_writes(verb, docs, current, skip_exists)
            _check_rules(store, plan)
            return plan

        return _run(store, f"{len(docs)} resources", attempt)

    done = {"create": "created", "apply": "applied", "replace": "replaced"}[verb]
    total = Outcome()
    _in_batches(done, documents, [ref_of(d).key for d in documents], batch, total, len(documents))
    return total


# -- delete ------------------------------------------------------------------------------------


def _check_tier_delete(store: Datastore, tier: Resource, deleting: set[str], plan: _Plan) -> None:
    """The default tiers stay; a tier is deleted only when no policy is left in it (policies deleted
    in the same transaction, `deleting` keys, do not count). The policies' prefixes join the
    transaction's compares, so a policy created in the tier meanwhile makes the delete retry."""
    if tier.name in UNDELETABLE_TIERS:
        raise Refused(f"operation delete is not supported on Tier({tier.name}): Cannot delete {tier.name} tier")
    for kind in (k for k in kinds.KINDS if k.tiered):
        policies, revision = stored.list_kind(store, kind)
        plan.prefixes.append((naming_prefix(kind), revision))
        holding = [p.name for p in policies if (p.doc.get("spec") or {}).get("tier") == tier.name and p.key not in deleting]
        if holding:
            raise Refused(f"operation delete is not supported on Tier({tier.name}): Cannot delete a non-empty tier (it holds {kind.name} {', '.join(holding[:3])})")


def delete(
    store: Datastore,
    targets: Sequence[tuple[Ref, str | None, str]],
    skip_not_exists: bool = False,
    force: bool = False,
    report: Callable[[str], None] = lambda line: None,
) -> Outcome:
    """Delete each (ref, resourceVersion or None, source) in order. IP pools and nodes are taken
    apart by `resources.removal` one at a time; the rest are deleted in one transaction when they
    fit. `force` is passed to the removals (release a pool's addresses; delete a node that still
    has workload endpoints); `report` gets a line per thing a removal does, and for a record that
    could not be read (it is deleted by its key)."""
    for ref, _, _ in targets:
        _readonly("delete", ref.kind, ref.name)
    special = {"IPPool": removal.remove_pool, "Node": removal.remove_node}

    def batch(items: list[tuple[Ref, str | None, str]]) -> Outcome:
        def attempt() -> _Plan:
            plan = _Plan()
            current, _ = stored.read(store, [ref for ref, _, _ in items], unreadable=report)
            deleting = {r.key for r in current if r is not None}
            for (ref, given, source), existing in zip(items, current):
                if existing is None and skip_not_exists:
                    plan.outcome.skipped += 1
                    continue
                existing = removal.deletable(ref, existing, given, source)
                if ref.kind.name == "Tier":
                    _check_tier_delete(store, existing, deleting, plan)
                plan.deletes.append(existing)
                plan.outcome.written += 1
                plan.outcome.resources.append(existing)
                _note_kind(plan.outcome, ref.kind)
            return plan

        return _run(store, f"{len(items)} resources", attempt)

    total = Outcome()
    plain: list[tuple[Ref, str | None, str]] = []

    def delete_plain() -> None:
        """Delete the items gathered so far: one transaction when they fit, else one by one."""
        _in_batches("deleted", plain, [ref.key for ref, _, _ in plain], batch, total, len(targets))
        plain.clear()

    for item in targets:
        remove = special.get(item[0].kind.name)
        if remove is None:
            plain.append(item)
            continue
        delete_plain()
        ref, given, _ = item
        try:
            removed = remove(store, ref, given, force, report)
        except DoesNotExist as exc:
            if not skip_not_exists:
                raise _partial("deleted", exc, total.handled, len(targets)) from None
            total.skipped += 1
            continue
        except ResourceError as exc:
            raise _partial("deleted", exc, total.handled, len(targets)) from None
        total.written += 1
        total.resources.append(removed)
        _note_kind(total, ref.kind)
    delete_plain()
    return total


# -- get, patch, label ---------------------------------------------------------------------------


def get(store: Datastore, kind: Kind, names: Sequence[str], namespace: str | None) -> list[Resource]:
    """The named resources (each must exist), or every resource of `kind` (in `namespace`; every
    namespace when None), in key order."""
    if not names:
        found, _ = stored.list_kind(store, kind, namespace)
        return found
    refs = [Ref(kind, n, (namespace or "default") if kind.namespaced else None) for n in names]
    found, _ = stored.read(store, refs)
    missing = [r.identifier for r, f in zip(refs, found) if f is None]
    if missing:
        raise DoesNotExist(f"resource does not exist: {', '.join(missing)}")
    return [f for f in found if f is not None]


def get_documents(store: Datastore, documents: Sequence[Document]) -> dict[str, list[Resource]]:
    """The stored resources a file's documents name, by kind (kinds and resources in file order),
    read in one round trip; each must exist (the first missing one, taking the kinds in turn, is
    named)."""
    by_kind: dict[str, list[Document]] = {}
    for document in documents:
        by_kind.setdefault(document.kind.name, []).append(document)
    ordered = [d for group in by_kind.values() for d in group]
    refs = [Ref(d.kind, d.doc["metadata"]["name"], (d.doc["metadata"].get("namespace") or "default") if d.kind.namespaced else None) for d in ordered]
    found, _ = stored.read(store, refs)
    out: dict[str, list[Resource]] = {}
    for ref, resource in zip(refs, found):
        if resource is None:
            raise DoesNotExist(f"resource does not exist: {ref.identifier}")
        out.setdefault(ref.kind.name, []).append(resource)
    return out


def table_context(store: Datastore, kind: Kind) -> dict[str, Any]:
    """What `get`'s contextual columns need to know of the cluster: the AS number nodes without
    their own inherit (the `default` BGPConfiguration's, else Calico's 64512)."""
    config = stored.get(store, Ref(BGP_CONFIGURATION, "default"))
    number = ((config.doc.get("spec") or {}).get("asNumber") if config else None) or DEFAULT_AS_NUMBER
    return {"global_as": number}


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` merged into `target` (RFC 7386 JSON merge patch): objects merge key by key, a null
    removes the key, anything else (lists included) replaces the value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path(path: str) -> list[str | int]:
    """`spec.ingress[0].foo` -> ["spec", "ingress", 0, "foo"]."""
    return [int(index) if index else key for key, index in _PATH_PART.findall(path)]


def _lookup(data: Any, path: list[str | int]) -> tuple[Any, str | int] | None:
    """The container holding the last step of `path` in `data`, and that step; None if absent."""
    for step in path[:-1]:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    last = path[-1]
    if isinstance(data, dict) and last in data or isinstance(data, list) and isinstance(last, int) and last < len(data):
        return data, last
    return None


def _decode_keeping_stored_fields(merged: dict[str, Any], change: dict[str, Any]) -> tuple[Kind, dict[str, Any]]:
    """A patched document decoded strictly, except that fields the stored record has and this
    calicoctl does not model (from a later Calico release) are set aside and written back unchanged
    (design rule 15). An unknown field the patch itself brings is still refused."""
    doc = copy.deepcopy(merged)
    set_aside: list[tuple[list[str | int], Any]] = []
    while True:
        try:
            kind, out = kinds.decode(doc)
            break
        except Invalid as exc:
            path = _path(exc.path)
            found = _lookup(doc, path) if exc.reason == "unknown field" and path else None
            if found is None or _lookup(change, path) is not None:
                raise
            container, last = found
            set_aside.append((path, container.pop(last)))
    for path, value in set_aside:
        parent = _lookup(out, path[:-1]) if len(path) > 1 else None
        target = out if len(path) == 1 else (parent[0][parent[1]] if parent else None)
        if isinstance(target, dict):
            target[path[-1]] = value
    return kind, out


def patch(store: Datastore, ref: Ref, patch_text: str) -> tuple[Resource, bool]:
    """Merge the JSON (or YAML) object `patch_text` into the stored resource, check the result as a
    file's document is checked, and write it (compare-and-swap, re-read on a lost race). Returns the
    resource and whether it changed."""
    _readonly("patch", ref.kind, ref.name)
    try:
        change = json.loads(patch_text)
    except ValueError as exc:
        raise BadDocument(f"the patch is not valid JSON: {exc}") from None
    if not isinstance(change, dict):
        raise BadDocument("the patch must be a JSON object, e.g. '{\"spec\":{\"disabled\":true}}'")

    def attempt() -> _Plan:
        current = stored.get(store, ref)
        if current is None:
            raise DoesNotExist(f"resource does not exist: {ref.identifier}")
        merged = merge_patch(current.document(), change)
        try:
            kind, doc = _decode_keeping_stored_fields(merged, change)
        except Invalid as exc:
            raise BadDocument(f"patched {ref.identifier}: {exc}") from None
        if kind is not ref.kind or resource_key(kind, doc["metadata"]["name"], doc["metadata"].get("namespace")) != ref.key:
            raise BadDocument(f"patched {ref.identifier}: a patch may not change the kind, name or namespace")
        document = Document("the patch", kind, doc)
        plan = _plan_writes("replace", [document], [current], False)
        _check_rules(store, plan)
        return plan

    outcome = _run(store, ref.identifier, attempt)
    return outcome.resources[0], outcome.written > 0


@dataclass
class Labelled:
    """What `label` did: the resource, and "set", "updated" or "removed"."""

    resource: Resource
    action: str


def label(store: Datastore, ref: Ref, key: str, value: str | None, overwrite: bool = False) -> Labelled:
    """Set the label `key` to `value` (None: remove it) on the stored resource, as `calicoctl label`
    does: changing an existing key needs `overwrite`; removing a key that is not there is an error."""
    _readonly("label", ref.kind, ref.name)
    reason = checks.label_key(key) or (checks.label_value(value) if value is not None else None)
    if reason:
        raise BadDocument(reason)
    word = ref.kind.name.lower()
    did: list[str] = []

    def attempt() -> _Plan:
        current = stored.get(store, ref)
        if current is None:
            raise DoesNotExist(f"{word} {ref.name} not found")
        labels = dict(current.doc.get("metadata", {}).get("labels") or {})
        if value is None:
            if key not in labels:
                raise Refused(f"cannot remove label of {word} {ref.name}, key {key} does not exist")
            del labels[key]
            action = "removed"
        elif key in labels:
            if not overwrite:
                raise Refused(f"failed to update label of {word} {ref.name}, key {key} is already present. please use '--overwrite' to set a new value.")
            labels[key] = value
            action = "updated"
        else:
            labels[key] = value
            action = "set"
        doc = copy.deepcopy(current.doc)
        if labels:
            doc["metadata"]["labels"] = labels
        else:
            doc["metadata"].pop("labels", None)
        new = Resource(ref.kind, doc, current.revision)
        plan = _Plan()
        if _read_normalised(new) == current.doc:
            plan.outcome.unchanged += 1
            plan.outcome.resources.append(current)
        else:
            plan.puts.append(new)
            plan.outcome.written += 1
            plan.outcome.resources.append(new)
        did.append(action)
        return plan

    outcome = _run(store, ref.identifier, attempt)
    return Labelled(outcome.resources[0], did[-1])
