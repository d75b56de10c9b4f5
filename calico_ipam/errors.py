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
