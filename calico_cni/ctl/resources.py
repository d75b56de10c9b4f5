"""calicoctl's resource verbs, with Calico's flags and messages: create, apply, replace and delete
with `-f FILE`, `get`, `delete KIND NAME`, `patch` and `label`. Each command parses its arguments,
calls `resources.verbs` and prints; every kind goes through the same commands."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import click

from calico_cni.datastore.resources import Ref
from calico_cni.model import kinds
from calico_cni.model.kinds.policy import unenforced_notes
from calico_cni.model.resource import Resource
from calico_cni.model.schema import Kind
from calico_cni.resources import documents, verbs
from calico_cni.resources.errors import PartialSuccess, ResourceError

from calico_cni.ctl.context import connection_options, ctl
from calico_cni.ctl.errors import CtlError
from calico_cni.ctl.output import dump, table


def usage(message: str) -> click.UsageError:
    """A command-line mistake: exit 2 and a pointer to the command's --help, as click's own."""
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


def file_options(f: Callable) -> Callable:
    """-f/--filename (repeatable; '-' is stdin), -R/--recursive, -n/--namespace."""
    f = click.option("-n", "--namespace", metavar="NS", help="Namespace of namespaced resources that do not name one (default: default).")(f)
    f = click.option("-R", "--recursive", is_flag=True, help="Also read the subdirectories of a directory given with -f.")(f)
    return click.option(
        "-f", "--filename", "filenames", multiple=True, metavar="FILE",
        help="A YAML or JSON resource file, a directory of them, or - for stdin.",
    )(f)


def namespace_of(kind: Kind, namespace: str | None, all_namespaces: bool = False) -> str | None:
    """The namespace a command means for `kind`: -n, else default (None for -A). -n or -A with a
    kind that has no namespace is refused, as calicoctl refuses it."""
    if not kind.namespaced:
        if namespace or all_namespaces:
            raise CtlError(f"{kind.name} is not namespaced")
        return None
    return None if all_namespaces else (namespace or "default")


def kind_of(name: str) -> Kind:
    """The kind a command-line word names; a usage error listing the kinds otherwise."""
    kind = kinds.lookup(name)
    if kind is None:
        names = ", ".join(sorted(k.plural for k in kinds.KINDS))
        raise usage(f"resource type '{name}' is not supported: use one of {names}")
    return kind


def _load(filenames: Sequence[str], recursive: bool, namespace: str | None) -> list[documents.Document]:
    if not filenames:
        raise usage("give the resources with -f FILE (a file, a directory, or - for stdin)")
    return documents.load(filenames, recursive, namespace)


def _what(kinds_seen: Sequence[str], single: str, plural: str) -> str:
    return single.format(kinds_seen[0]) if len(kinds_seen) == 1 else plural


def _write(verb: str, done: str, filenames, recursive, namespace, skip_exists: bool = False) -> None:
    docs = _load(filenames, recursive, namespace)
    kinds_seen = list(dict.fromkeys(d.kind.name for d in docs))
    try:
        outcome = verbs.write(ctl().store, verb, docs, skip_exists=skip_exists)
    except PartialSuccess:
        raise
    except ResourceError as exc:
        what = _what(kinds_seen, "'{}' resource" if len(docs) == 1 else "any '{}' resources", "any resources")
        raise CtlError(f"Failed to {verb} {what}: {exc}") from None
    _success(done, outcome, kinds_seen, "already existed")
    if outcome.unchanged:
        click.echo(f"({outcome.unchanged} unchanged: nothing written for them)", err=True)
    for line in unenforced_warnings(docs):
        click.echo(line, err=True)


def unenforced_warnings(docs: Sequence[documents.Document]) -> list[str]:
    """One "Warning:" line per resource that uses what this node daemon does not enforce as Calico
    would (host endpoints, doNotTrack, preDNAT, applyOnForward, http; service accounts matched
    only on labels given by hand; Kubernetes Services matching nothing), naming the resource, the
    fields and what becomes of them."""
    lines = []
    for d in docs:
        notes = unenforced_notes(d.kind.name, d.doc)
        if notes:
            meta = d.doc["metadata"]
            name = f"{meta['namespace']}/{meta['name']}" if d.kind.namespaced and meta.get("namespace") else meta["name"]
            lines.append(f"Warning: {d.kind.name} {name}: {'; '.join(notes)}")
    return lines


def _success(done: str, outcome: verbs.Outcome, kinds_seen: Sequence[str], skipped_because: str) -> None:
    """calicoctl's "Successfully applied N 'Kind' resource(s)" (the kind named when the file has
    one), saying how many were skipped."""
    label = f"'{kinds_seen[0]}' " if len(kinds_seen) == 1 else ""
    skipped = f" ({outcome.skipped} skipped: {skipped_because})" if outcome.skipped else ""
    click.echo(f"Successfully {done} {outcome.handled - outcome.skipped} {label}resource(s){skipped}")


@click.command("create")
@file_options
@click.option("--skip-exists", is_flag=True, help="Skip resources that already exist instead of failing.")
@connection_options
def create(filenames, recursive, namespace, skip_exists) -> None:
    """Create the resources of a file; fails if one exists (nothing is written then)."""
    _write("create", "created", filenames, recursive, namespace, skip_exists)


@click.command("apply")
@file_options
@connection_options
def apply(filenames, recursive, namespace) -> None:
    """Create the resources of a file, or update those that exist."""
    _write("apply", "applied", filenames, recursive, namespace)


@click.command("replace")
@file_options
@connection_options
def replace(filenames, recursive, namespace) -> None:
    """Replace existing resources with the file's; fails if one does not exist."""
    _write("replace", "replaced", filenames, recursive, namespace)


@click.command("delete")
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@file_options
@click.option("-s", "--skip-not-exists", is_flag=True, help="Skip resources that do not exist instead of failing.")
@click.option("--force", is_flag=True, help="IP pools: also release the addresses still allocated from the pool. Nodes: also delete a node that still has workload endpoints (their addresses are released).")
@connection_options
def delete(kind, names, filenames, recursive, namespace, skip_not_exists, force) -> None:
    """Delete resources: KIND NAME... or -f FILE.

    \b
    Deleting a node also releases its addresses and block affinities and deletes its BGP peers, host
    endpoints and per-node configuration; it is refused while the node has workload endpoints,
    unless --force.
    Deleting an IP pool is refused while addresses of it are allocated, unless --force.
    """
    if filenames:
        if kind:
            raise usage("give either KIND NAME... or -f FILE, not both")
        docs = _load(filenames, recursive, namespace)
        targets = [(verbs.ref_of(d), d.resource_version, d.source) for d in docs]
    else:
        if not kind or not names:
            raise usage("give KIND NAME... or -f FILE")
        k = kind_of(kind)
        targets = [(Ref(k, n, namespace_of(k, namespace)), None, "") for n in names]
    kinds_seen = list(dict.fromkeys(t[0].kind.name for t in targets))
    try:
        outcome = verbs.delete(ctl().store, targets, skip_not_exists=skip_not_exists, force=force, report=click.echo)
    except PartialSuccess:
        raise
    except ResourceError as exc:
        what = _what(kinds_seen, "'{}' resource", "resource")
        raise CtlError(f"Failed to delete {what}: {exc}") from None
    _success("deleted", outcome, kinds_seen, "did not exist")


# -- get -----------------------------------------------------------------------------------------


def _list_doc(kind: Kind, found: Sequence[Resource]) -> dict[str, Any]:
    revision = max((r.revision for r in found), default=0)
    return {"apiVersion": kinds.API_VERSION, "kind": f"{kind.name}List", "metadata": {"resourceVersion": str(revision)}, "items": [r.document() for r in found]}


def _table(kind: Kind, found: Sequence[Resource], wide: bool, show_namespace: bool) -> str:
    columns = list(kind.wide if wide and kind.wide else kind.columns)
    headers = [c.header for c in columns]
    context = verbs.table_context(ctl().store, kind) if any(c.contextual for c in columns) else {}
    rows = [[_cell(c.cell(r.document(), context) if c.contextual else c.cell(r.document())) for c in columns] for r in found]
    if kind.namespaced and show_namespace:
        headers = ["NAMESPACE", *headers]
        rows = [[r.namespace or "", *row] for r, row in zip(found, rows)]
    return table(headers, rows, padding=3)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@click.command("get")
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE", help="Show the resources a file names (- for stdin).")
@click.option("-R", "--recursive", is_flag=True, help="Also read the subdirectories of a directory given with -f.")
@click.option("-o", "--output", "output", default="ps", show_default=True, metavar="FORMAT", help="ps (a table), wide (more columns), yaml or json.")
@click.option("-n", "--namespace", metavar="NS", help="Namespace of namespaced resources (default: default).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Namespaced resources of every namespace.")
@connection_options
def get(kind, names, filenames, recursive, output, namespace, all_namespaces) -> None:
    """Show resources: KIND [NAME...], or those named in -f FILE.

    \b
    Several results print as a <Kind>List in yaml and json; one named resource prints bare, and
    applies back unchanged.
    """
    output = output.lower()
    if output not in ("ps", "wide", "yaml", "json"):
        raise usage(f"unrecognized output format '{output}': use ps, wide, yaml or json")
    if all_namespaces and namespace:
        raise usage("give either -n NAMESPACE or -A, not both")
    store = ctl().store
    if filenames:
        if kind:
            raise usage("give either KIND [NAME...] or -f FILE, not both")
        docs = _load(filenames, recursive, namespace)
        for d in docs:
            namespace_of(d.kind, None, all_namespaces)  # -A with a kind without namespaces is refused
        found = verbs.get_documents(store, docs)
        everything = [r for rs in found.values() for r in rs]
        if output in ("yaml", "json"):
            if len(everything) == 1:
                click.echo(dump(everything[0].document(), output))
            elif len(found) == 1:
                click.echo(dump(_list_doc(everything[0].kind, everything), output))
            else:  # several kinds: the documents themselves, each as its kind
                click.echo(dump([r.document() for r in everything], output))
            return
        # One table per kind, each with its kind's columns.
        click.echo("\n\n".join(_table(rs[0].kind, rs, output == "wide", False) for rs in found.values()))
        return
    if not kind:
        raise usage("give the kind of resource to show, e.g. calicoctl get ippools")
    k = kind_of(kind)
    ns = namespace_of(k, namespace, all_namespaces)
    if names and all_namespaces:
        raise usage("cannot use --all-namespaces flag for getting a single resource")
    found = verbs.get(store, k, names, ns)
    # calicoctl adds the NAMESPACE column whenever -n or -A was given.
    _print(k, found, output, named=len(names) == 1, show_namespace=bool(all_namespaces or namespace))


def _print(kind: Kind, found: Sequence[Resource], output: str, named: bool, show_namespace: bool) -> None:
    if output in ("yaml", "json"):
        data = found[0].document() if named else _list_doc(kind, found)
        click.echo(dump(data, output))
    else:
        click.echo(_table(kind, found, output == "wide", show_namespace))


# -- patch and label -------------------------------------------------------------------------------


@click.command("patch")
@click.argument("kind")
@click.argument("name")
@click.option("-p", "--patch", "patch_text", required=True, metavar="PATCH", help="A JSON object merged into the resource, e.g. '{\"spec\":{\"disabled\":true}}' (lists are replaced; null removes a field).")
@click.option("-t", "--type", "patch_type", default="strategic", show_default=True, type=click.Choice(["strategic", "merge", "json"]), help="Accepted for Calico's command lines: strategic and merge both merge objects and replace lists; json (RFC 6902) is refused, as Calico has not implemented it either.")
@click.option("-n", "--namespace", metavar="NS", help="Namespace of a namespaced resource (default: default).")
@connection_options
def patch(kind, name, patch_text, patch_type, namespace) -> None:
    """Change fields of the resource KIND NAME."""
    k = kind_of(kind)
    if patch_type == "json":
        raise usage("--type json (a JSON Patch) is not implemented, as in Calico: give a JSON merge patch with --type strategic or merge")
    ref = Ref(k, name, namespace_of(k, namespace))
    try:
        verbs.patch(ctl().store, ref, patch_text)
    except ResourceError as exc:
        raise CtlError(f"Failed to patch '{k.name}' resource: {exc}") from None
    click.echo(f"Successfully patched 1 '{k.name}' resource")


@click.command("label")
@click.argument("kind")
@click.argument("name")
@click.argument("label_arg", metavar="KEY=VALUE|KEY")
@click.option("--overwrite", is_flag=True, help="Change the value of a label the resource already has.")
@click.option("--remove", is_flag=True, help="Remove the label KEY.")
@click.option("-n", "--namespace", metavar="NS", help="Namespace of a namespaced resource (default: default).")
@connection_options
def label(kind, name, label_arg, overwrite, remove, namespace) -> None:
    """Set (KEY=VALUE) or remove (KEY --remove) one label of the resource KIND NAME."""
    k = kind_of(kind)
    if remove:
        if "=" in label_arg:
            raise usage(f"invalid label {label_arg}: give only the key with --remove")
        key, value = label_arg, None
    else:
        if "=" not in label_arg:
            raise usage(f"invalid label {label_arg}: give key=value, or key with --remove")
        key, value = label_arg.split("=", 1)
    ref = Ref(k, name, namespace_of(k, namespace))
    done = verbs.label(ctl().store, ref, key, value, overwrite)
    verb = {"set": "set label {} on", "updated": "updated label {} on", "removed": "removed label {} from"}[done.action]
    click.echo(f"Successfully {verb.format(key)} {kind} {name}")


COMMANDS = (create, apply, replace, delete, get, patch, label)
