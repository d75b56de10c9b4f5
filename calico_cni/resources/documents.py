"""Resource files as calicoctl reads them: YAML or JSON, several documents per file (`---`), a
top-level array, or a typed list (`kind: IPPoolList` with `items`); `-f -` is stdin, a directory
gives its `.yaml`, `.yml` and `.json` files (its subdirectories too with `-R`). A generic
`kind: List` is refused, as calicoctl refuses it.

Every document is decoded strictly against its kind (`model.kinds.decode`) before anything is
written, so one bad document changes nothing; the error names the file, the document, the field
and the rule."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, TextIO

import yaml

from calico_cni.model import kinds
from calico_cni.model.schema import Invalid, Kind

from calico_cni.resources.errors import BadDocument

EXTENSIONS = (".yaml", ".yml", ".json")


class _Loader(yaml.SafeLoader):
    """YAML without the 1.1 surprises a resource file must not suffer: timestamps stay strings
    (creationTimestamp is written back as it was read)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Document:
    """One decoded resource of a file: where it came from (for messages), its kind and its
    document (defaults filled in), and the resourceVersion the file gave (None: none)."""

    source: str
    kind: Kind
    doc: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        """metadata.resourceVersion as the file wrote it."""
        return self.doc["metadata"].get("resourceVersion") or None


def _files(path: str, recursive: bool) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    found: list[str] = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, n) for n in sorted(names) if n.endswith(EXTENSIONS)]
        if not recursive:
            break
    return found


def _parse_text(text: str, name: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except ValueError:
            pass  # YAML flow style is also possible; let the YAML parser say what is wrong
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadDocument(f"{name} is not valid YAML or JSON{at}: {problem}") from None


def _flatten(data: Any, source: str) -> Iterable[tuple[str, Any]]:
    """Documents from one parsed YAML document: itself, the items of an array, or of a typed list."""
    if data is None:
        return
    if isinstance(data, list):
        for i, item in enumerate(data, 1):
            yield from _flatten(item, f"{source}, item {i}")
        return
    if isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"].endswith("List"):
        if data["kind"] == "List":
            raise BadDocument(f"{source}: kind 'List' is not a Calico v3 resource: use a typed list such as IPPoolList, an array, or several documents")
        if kinds.list_kind(data["kind"]) is None:
            raise BadDocument(f"{source}: unknown list kind {data['kind']!r}")
        items = data.get("items") or []
        if not isinstance(items, list):
            raise BadDocument(f"{source}: items of {data['kind']} must be a list")
        for i, item in enumerate(items, 1):
            if isinstance(item, dict) and "kind" not in item:
                item = {"kind": data["kind"][: -len("List")], "apiVersion": data.get("apiVersion"), **item}
            yield f"{source}, item {i}", item
        return
    yield source, data


def read_sources(paths: Iterable[str], recursive: bool = False, stdin: TextIO | None = None) -> list[tuple[str, Any]]:
    """Every raw document of the files `paths` ("-" is stdin), each with a label saying where it is
    (`pool.yaml, document 2`)."""
    raw: list[tuple[str, Any]] = []
    for path in paths:
        if path == "-":
            sources = [("stdin", (stdin or sys.stdin).read())]
        else:
            if not os.path.exists(path):
                raise BadDocument(f"cannot read {path}: no such file or directory")
            names = _files(path, recursive)
            if not names:
                raise BadDocument(f"{path} holds no .yaml, .yml or .json file{'' if recursive else ' (pass -R to read its subdirectories)'}")
            sources = []
            for name in names:
                try:
                    with open(name, encoding="utf-8") as f:
                        sources.append((name, f.read()))
                except (OSError, UnicodeDecodeError) as exc:
                    raise BadDocument(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        for name, text in sources:
            parsed = _parse_text(text, name)
            for i, data in enumerate(parsed, 1):
                label = f"{name}, document {i}" if len(parsed) > 1 else name
                raw.extend(_flatten(data, label))
    return raw


def describe(source: str, data: Any) -> str:
    """`pool.yaml, document 2 (IPPool pool1)`: where a document is, and what it says it is."""
    if isinstance(data, dict):
        name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
        what = " ".join(str(x) for x in (data.get("kind"), name) if x)
        if what:
            return f"{source} ({what})"
    return source


def decode_all(raw: Iterable[tuple[str, Any]], namespace: str | None = None) -> list[Document]:
    """Every raw document decoded strictly (`model.kinds.decode`); the first that fails raises
    `BadDocument` naming it, the field and the rule. `namespace` is given to namespaced documents
    that name none (`-n`)."""
    out: list[Document] = []
    for source, data in raw:
        named = kinds.by_kind(data["kind"]) if isinstance(data, dict) and isinstance(data.get("kind"), str) else None
        if namespace and named is not None and not named.namespaced:
            # As calicoctl: -n with a kind that has no namespace is refused, not ignored.
            raise BadDocument(f"{describe(source, data)}: -n {namespace}: {named.name} is not namespaced")
        if namespace and isinstance(data, dict) and isinstance(data.get("metadata"), dict) and not data["metadata"].get("namespace"):
            data = {**data, "metadata": {**data["metadata"], "namespace": namespace}}
        try:
            kind, doc = kinds.decode(data)
        except Invalid as exc:
            raise BadDocument(f"{describe(source, data)}: {exc}") from None
        if namespace and kind.namespaced and doc["metadata"].get("namespace") != namespace:
            raise BadDocument(f"{describe(source, data)}: metadata.namespace {doc['metadata']['namespace']!r} differs from -n {namespace}")
        out.append(Document(source, kind, doc))
    if not out:
        raise BadDocument("no resources found in the input")
    return out


def load(paths: Iterable[str], recursive: bool = False, namespace: str | None = None, stdin: TextIO | None = None) -> list[Document]:
    """The decoded documents of `paths` (see `read_sources` and `decode_all`)."""
    return decode_all(read_sources(paths, recursive, stdin), namespace)
