"""The IPAM floor's exceptions (the CNI plugins map them to codes in `plugins.errors`, calicoctl to
exit codes in `ctl.errors`)."""

from __future__ import annotations

from calico_cni.errors import CalicoError


class IpamError(CalicoError):
    """Any failure of IPAM logic."""


class AddressesExhausted(IpamError):
    """No address can be had: no usable pool, pools full, block limit reached."""


class AddressConflict(IpamError):
    """The address asked for is not free (held by another handle, reserved, or outside the pools)."""


class RepairRefused(IpamError):
    """A release or repair that the records do not allow: the address is not allocated, was
    released already, is still used by a workload endpoint, or a block gained allocations while
    its pool was being deleted. Nothing was changed by the refused step. Only calicoctl raises
    it (no CNI verb repairs)."""


class InvalidReport(IpamError):
    """A document that is not a valid `calicoctl ipam check` report. Only calicoctl raises it."""


class PoolRefused(IpamError):
    """An IP pool change the records do not allow: the pool does not exist, already exists,
    overlaps another pool, or (without force) still has allocated addresses. Nothing was changed
    by the refused step. Only calicoctl raises it (no CNI verb changes pools)."""
