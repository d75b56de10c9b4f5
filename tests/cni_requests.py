"""CNI requests and answers as the protocol tests build and read them: the versions, the attachment
variables, a complete CNI environment, and the one-JSON-object check on a plugin's stdout. Shared by
the pure protocol tests (tests/unit/test_protocol.py) and those that exec the installed plugin
(tests/etcd/test_protocol.py)."""

from __future__ import annotations

import json

ALL_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
ATTACH_VARS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH")


def env(command: str = "ADD", **overrides: str | None) -> dict[str, str]:
    """A complete CNI environment; an override of None removes the variable."""
    out = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def one_json_object(text: str) -> dict:
    """stdout must hold exactly one JSON object and nothing else."""
    obj, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip() == "", f"extra output after the JSON object: {text[end:]!r}"
    assert isinstance(obj, dict)
    return obj
