"""The dataplane floor's exceptions (the CNI plugins map them to codes in `plugins.errors`)."""

from __future__ import annotations

from calico_cni.errors import CalicoError


class DataplaneError(CalicoError):
    """Programming the kernel failed (links, addresses, routes, sysctls)."""


class NamespaceError(CalicoError):
    """A network namespace path that cannot be used (missing, not a namespace, unreadable)."""


class MtuError(CalicoError):
    """An MTU setting or MTU file that cannot be used."""
