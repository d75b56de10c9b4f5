"""The rules IPAM settings must satisfy (`calicoctl ipam configure`). Pure functions: each raises
`CtlError` with a message that says what is wrong and what would be accepted. (Resource fields are
checked by their kind's description in `model.kinds`.)"""

from __future__ import annotations

from calico_cni.ctl.errors import CtlError


def ipam_settings(strict_affinity: bool, auto_allocate_blocks: bool, max_blocks_per_host: int) -> None:
    """Strict affinity and auto-allocation may not both be off, and a per-host block limit needs
    strict affinity: Calico's SetIPAMConfig (libcalico-go ipam.go, v3.30) refuses both, so a
    configuration written here is one Calico's tools accept."""
    if not strict_affinity and not auto_allocate_blocks:
        raise CtlError(
            "strict affinity and auto-allocate-blocks may not both be off: set --strictaffinity=true or --auto-allocate-blocks=true"
        )
    if max_blocks_per_host > 0 and not strict_affinity:
        raise CtlError(
            f"max-blocks-per-host {max_blocks_per_host} needs strict affinity: set --strictaffinity=true, or --max-blocks-per-host=0 for Calico's default of 20"
        )
