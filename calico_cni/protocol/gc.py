"""The CNI GC verb's own key: `cni.dev/valid-attachments`, the attachments the runtime still has."""

from __future__ import annotations

from typing import Any, Mapping

from calico_cni.protocol.errors import INVALID_CONFIG, CniError

VALID_ATTACHMENTS = "cni.dev/valid-attachments"


def valid_attachments(config: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The (containerID, ifname) pairs of a GC request's `cni.dev/valid-attachments` (ifname None
    or "" when absent: every interface of the container). Error 7 when the key is absent or
    malformed: a GC without it would release everything."""
    items = config.get(VALID_ATTACHMENTS)
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("containerID"), str) and isinstance(i.get("ifname", ""), str) for i in items
    ):
        raise CniError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments: a list of {containerID, ifname}")
    return [(i["containerID"], i.get("ifname")) for i in items]
