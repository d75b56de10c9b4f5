"""The failures of the resource verbs, each a `CalicoError` whose text is what calicoctl prints.
Messages start the way Calico's do ("resource already exists: IPPool(p1)", "update conflict: ...",
"resource does not exist: ..."), because users search for those words."""

from __future__ import annotations

from calico_cni.errors import CalicoError


class ResourceError(CalicoError):
    """A resource file or a verb's request that cannot be carried out; nothing was written."""


class BadDocument(ResourceError):
    """A document of a resource file that does not decode or breaks a rule."""


class AlreadyExists(ResourceError):
    """create (without --skip-exists) of a resource that exists."""


class DoesNotExist(ResourceError):
    """replace, delete, patch, label or get of a resource that does not exist."""


class UpdateConflict(ResourceError):
    """A resourceVersion in the file that is not the stored one, or a race lost too many times."""


class Refused(ResourceError):
    """A write the rules refuse (read-only kind, overlapping pool, missing tier, a node with
    workloads)."""


class PartialSuccess(ResourceError):
    """A file too large for one transaction failed part-way: `done` documents were written (in
    file order) before the failure."""

    def __init__(self, msg: str, details: str = "", done: int = 0, total: int = 0) -> None:
        super().__init__(msg, details)
        self.done = done
        self.total = total
