"""CNI specification versions: what we support and how they compare."""

from __future__ import annotations

from calico_cni.protocol.errors import INCOMPATIBLE_VERSION, CniError

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
HIGHEST = SUPPORTED_VERSIONS[-1]


def version_key(version: str) -> tuple[int, ...]:
    """Turn "1.0.0" into (1, 0, 0) for comparisons; raises ValueError on garbage."""
    parts = version.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(version)
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def at_least(version: str, minimum: str) -> bool:
    """True when `version` is `minimum` or newer."""
    return version_key(version) >= version_key(minimum)


def require_supported(version: str) -> None:
    """Raise CNI error 1 unless we speak `version`."""
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"unsupported CNI version {version!r}",
            "this plugin supports " + ", ".join(SUPPORTED_VERSIONS),
        )


def version_info() -> dict:
    """The VERSION verb's answer."""
    return {"cniVersion": HIGHEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
