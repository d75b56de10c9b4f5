"""A small schema language for Calico's v3 resources: each field's type, decoded strictly.

A resource file is decoded the way calicoctl decodes it: a field the schema does not name is an
error naming it, and a value of the wrong type or outside its rule is an error naming the field
and the rule. Decoding returns the value normalised (an enum in Calico's spelling, `null` fields
dropped), so what is stored is what Calico would store. Records read back from etcd are never
decoded with these schemas: they keep every field, known or not (design rule 15).

Every type is a `Field` with `decode(value, path)`; `path` is the dotted field name used in errors
(`spec.ingress[0].ports[1]`). Standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

# Set while decoding records as stored (see `unknown_fields_skipped`).
_SKIP_UNKNOWN = contextvars.ContextVar("calico_schema_skip_unknown", default=False)


@contextlib.contextmanager
def unknown_fields_skipped() -> Iterator[None]:
    """Decode records as stored rather than as a user's file: a field this schema does not know
    (one a later Calico release added) is skipped instead of refused, so a daemon reading what a
    newer calicoctl wrote still uses the record. Every field it knows is checked as usual."""
    token = _SKIP_UNKNOWN.set(True)
    try:
        yield
    finally:
        _SKIP_UNKNOWN.reset(token)


def skipping_unknown() -> bool:
    """Whether unknown fields are being skipped (`unknown_fields_skipped`)."""
    return _SKIP_UNKNOWN.get()

Check = Callable[[Any], "str | None"]


class Invalid(ValueError):
    """A value that breaks a rule: `path` names the field, `reason` says what is wrong and what
    would be accepted."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def join(path: str, key: str | int) -> str:
    """The path of a member: `spec` + `cidr` -> `spec.cidr`; `spec.ports` + 1 -> `spec.ports[1]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    """What a JSON value is, for a refusal: "a string", "a number", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _run(check: Check | None, value: Any, path: str) -> None:
    if check is not None:
        reason = check(value)
        if reason:
            raise Invalid(path, reason)


class Field:
    """A field's type. `decode` returns the normalised value or raises `Invalid`."""

    def decode(self, value: Any, path: str) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Field):
    """A string, optionally checked by `check` (returns the reason it is refused, or None)."""

    check: Check | None = None

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise Invalid(path, f"expected a string, got {type_name(value)}")
        _run(self.check, value, path)
        return value


@dataclass(frozen=True)
class Int(Field):
    """An integer within [low, high] when given (a boolean is not an integer)."""

    low: int | None = None
    high: int | None = None
    check: Check | None = None

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"expected an integer, got {type_name(value)}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            if self.high is None:
                raise Invalid(path, f"{value} is out of range: expected at least {self.low}")
            if self.low is None:
                raise Invalid(path, f"{value} is out of range: expected at most {self.high}")
            raise Invalid(path, f"{value} is out of range: expected {self.low} to {self.high}")
        _run(self.check, value, path)
        return value


@dataclass(frozen=True)
class Float(Field):
    """A number (Calico's float64 fields, such as a policy's `order`)."""

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"expected a number, got {type_name(value)}")
        return value


@dataclass(frozen=True)
class Bool(Field):
    """true or false."""

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise Invalid(path, f"expected true or false, got {type_name(value)}")
        return value


class Enum(Field):
    """One of `choices`, returned in the spelling given here; `fold` accepts any letter case
    (Calico accepts `tcp` for `TCP` in rules, but not `always` for an IP pool's `Always`)."""

    def __init__(self, *choices: str, fold: bool = False) -> None:
        self.choices = choices
        self.fold = fold

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            for choice in self.choices:
                if value == choice or (self.fold and value.lower() == choice.lower()):
                    return choice
        raise Invalid(path, f"invalid value {value!r}: expected one of {', '.join(self.choices)}")


@dataclass(frozen=True)
class List(Field):
    """A list of `item`, at most `max_items` long when given."""

    item: Field
    max_items: int | None = None
    check: Check | None = None

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise Invalid(path, f"expected a list, got {type_name(value)}")
        if self.max_items is not None and len(value) > self.max_items:
            raise Invalid(path, f"{len(value)} entries: at most {self.max_items} are allowed")
        out = [self.item.decode(v, join(path, i)) for i, v in enumerate(value)]
        _run(self.check, out, path)
        return out


@dataclass(frozen=True)
class Map(Field):
    """An object with free keys (labels, annotations): keys checked by `key`, values by `value`."""

    value: Field
    key: Check | None = None

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid(path, f"expected an object, got {type_name(value)}")
        out = {}
        for k, v in value.items():
            k = str(k)
            _run(self.key, k, join(path, k))
            out[k] = self.value.decode(v, join(path, k))
        return out


@dataclass(frozen=True)
class Obj(Field):
    """An object with named fields, decoded strictly: a key not in `fields` is an error naming it.
    `required` fields must be present; `check(obj, path)` then checks the fields together and
    raises `Invalid` (for rules such as "icmp needs protocol ICMP")."""

    fields: Mapping[str, Field]
    required: tuple[str, ...] = ()
    check: Callable[[dict, str], None] | None = None

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid(path, f"expected an object, got {type_name(value)}")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k not in self.fields:
                if _SKIP_UNKNOWN.get():
                    continue
                raise Invalid(join(path, str(k)), "unknown field")
            if v is None:  # `field:` with no value in YAML, or JSON null: as if absent, as Go decodes it
                continue
            out[k] = self.fields[k].decode(v, join(path, k))
        for k in self.required:
            if k not in out:
                raise Invalid(join(path, k), "required field is missing")
        if self.check is not None:
            self.check(out, path)
        return out


@dataclass(frozen=True)
class Free(Field):
    """Any JSON value, kept as given (a structure Calico itself passes through unchecked)."""

    def decode(self, value: Any, path: str) -> Any:
        return value


@dataclass(frozen=True)
class OneOf(Field):
    """The first of `options` that accepts the value (an int-or-string port, for example)."""

    options: tuple[Field, ...]
    what: str = ""

    def decode(self, value: Any, path: str) -> Any:
        reasons = []
        for option in self.options:
            try:
                return option.decode(value, path)
            except Invalid as exc:
                reasons.append(exc.reason)
        raise Invalid(path, self.what or reasons[-1])


_DURATION = re.compile(r"^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+\Z")


def duration(value: str) -> str | None:
    """A Go duration ("90s", "1m30s", "500ms", "-1.5h"), as Go's time.ParseDuration reads the
    durations of Calico's configuration fields."""
    if value in ("0", "+0", "-0") or _DURATION.match(value):
        return None
    return f"invalid duration {value!r}: expected a number with a unit, e.g. 90s, 5m or 1h30m"


@dataclass
class Column:
    """A column of `calicoctl get`'s table: its header and the cell it shows for a document. A
    `contextual` cell also gets what the table knows of the cluster (`cell(doc, context)`, e.g. the
    cluster's AS number a node inherits: see `resources.verbs.table_context`)."""

    header: str
    cell: Callable[..., Any]
    contextual: bool = False


@dataclass
class Kind:
    """One kind of Calico v3 resource, described once: every verb of calicoctl works from this.

    - `name`, `plural` (the etcd key segment) and `aliases` (every spelling calicoctl accepts
      after `get`, `delete`, `label` and `patch`, lower case; `name.lower()` and `plural` are
      always accepted).
    - `spec`: the strict schema of `spec`; `namespaced`: whether names live in a namespace.
    - `prepare(doc)`: fills Calico's defaults into a decoded document and checks rules that span
      fields or need the name (raises `Invalid`); runs before anything is written.
    - `immutable(old, new)`: the reason an update may not change the stored document that way, or
      None (an IP pool's CIDR, for example).
    - `name_check(name)`: the reason a name is refused, or None.
    - `columns` and `wide`: the table `get` prints, and the (longer) one `get -o wide` prints.
    - `writable`: False for kinds calicoctl only shows (ClusterInformation).
    - `tiered`: a policy kind, stored under its tier-prefixed name (see `model.resource`).
    - `status`: the schema of a top-level `status` (Node, KubeControllersConfiguration), or None
      when the kind has none.
    - `spec_required`: a document without `spec` is refused (an IP pool needs its cidr).
    - `on_read(doc)`: the defaults Calico's client fills into a record it reads (an IP pool written
      without a block size has Calico's 26 or 122), so a record shows and compares as Calico's
      tools see it.
    - `name_from_spec`: a document may omit metadata.name; `prepare` derives it from the spec (a
      WorkloadEndpoint's name is built from its node, orchestrator, workload and endpoint).
    - `managed_elsewhere`: (name prefix, reason) pairs of resources that another controller owns
      and calicoctl must not write (Kubernetes network policies copied into Calico).
    """

    name: str
    plural: str
    spec: Obj
    namespaced: bool = False
    aliases: tuple[str, ...] = ()
    prepare: Callable[[dict], None] | None = None
    immutable: Callable[[dict, dict], "str | None"] | None = None
    name_check: Check | None = None
    columns: tuple[Column, ...] = ()
    wide: tuple[Column, ...] = ()
    writable: bool = True
    tiered: bool = False
    spec_required: bool = False
    status: Field | None = None
    on_read: Callable[[dict], None] | None = None
    name_from_spec: bool = False
    managed_elsewhere: tuple[tuple[str, str], ...] = ()

    def names(self) -> set[str]:
        """Every lower-case spelling of this kind calicoctl accepts."""
        return {self.name.lower(), self.plural, *self.aliases}
