"""CNI results: one internal shape (1.x) and conversion to the version the runtime asked for.

0.3.0, 0.3.1 and 0.4.0 results carry `"version": "4"|"6"` on every `ips` entry; 1.x results do not.
`mtu`, `socketPath` and `pciID` on interfaces exist only in 1.1.0.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from calico_cni.protocol.errors import INVALID_CONFIG, CniError
from calico_cni.protocol.versions import at_least

_IFACE_KEYS_1_1 = ("mtu", "socketPath", "pciID")


def ip_family(address: str) -> int:
    """4 or 6 for an "addr/prefix" string."""
    return ipaddress.ip_interface(address).version


def normalize(result: dict[str, Any]) -> dict[str, Any]:
    """Turn a result of any supported version (a prevResult, a delegated plugin's answer) into 1.x shape.

    Raises error 7 when the result is not a usable CNI result.
    """
    if not isinstance(result, dict):
        raise CniError(INVALID_CONFIG, "result must be a JSON object")
    out: dict[str, Any] = {k: v for k, v in result.items() if k != "cniVersion"}
    for key in ("interfaces", "ips", "routes"):
        value = result.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise CniError(INVALID_CONFIG, f"result {key} must be a list of objects", repr(value)[:120])
    ips = []
    for entry in result.get("ips") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise CniError(INVALID_CONFIG, "result ips entries need a string address", repr(entry)[:120])
        try:
            ipaddress.ip_interface(entry["address"])
        except ValueError:
            raise CniError(INVALID_CONFIG, f"result has an invalid address {entry['address']!r}") from None
        ips.append({k: v for k, v in entry.items() if k != "version"})
    out["ips"] = ips
    return out


def convert(result: dict[str, Any], cni_version: str) -> dict[str, Any]:
    """Render a 1.x-shaped result for `cni_version` (adding or dropping version-specific fields)."""
    out: dict[str, Any] = {"cniVersion": cni_version}
    legacy = not at_least(cni_version, "1.0.0")
    with_iface_extras = at_least(cni_version, "1.1.0")
    if result.get("interfaces"):
        out["interfaces"] = [
            {k: v for k, v in iface.items() if with_iface_extras or k not in _IFACE_KEYS_1_1} for iface in result["interfaces"]
        ]
    ips = []
    for entry in result.get("ips") or []:
        item = {k: v for k, v in entry.items() if k != "version"}
        if legacy:
            item = {"version": str(ip_family(entry["address"])), **item}
        ips.append(item)
    out["ips"] = ips
    if result.get("routes"):
        out["routes"] = result["routes"]
    out["dns"] = result.get("dns") or {}
    for key, value in result.items():
        if key not in out and key not in ("interfaces", "ips", "routes", "dns", "cniVersion"):
            out[key] = value
    return out
