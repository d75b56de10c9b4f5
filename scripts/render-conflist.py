"""Fill the placeholders of conf/10-calico.conflist (used by scripts/install-cni.sh).

Usage: render-conflist.py TEMPLATE KEY=VALUE...   (writes the conflist JSON on stdout)
An empty value removes its key, so a node without TLS gets no etcd_*_file keys; MTU becomes a
number. Keys: ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, NODENAME, MTU,
ASSIGN_IPV6, LOG_FILE_PATH, AGENT_SOCKET, MTU_FILE.
"""

import json
import sys


def render(template: dict, values: dict[str, str]) -> dict:
    def walk(node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                value = walk(value)
                if value is not _DROP:
                    out[key] = value
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and node.startswith("__") and node.endswith("__"):
            name = node[2:-2]
            value = values.get(name, "")
            if value == "":
                return _DROP
            return int(value) if name == "MTU" else value
        return node

    conf = walk(template)
    main = conf["plugins"][0]
    if values.get("ASSIGN_IPV6") == "true":
        main["ipam"]["assign_ipv6"] = "true"
    if values.get("LOG_FILE_PATH"):
        main["log_file_path"] = values["LOG_FILE_PATH"]
    return conf


_DROP = object()

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        template = json.load(f)
    values = dict(arg.split("=", 1) for arg in sys.argv[2:])
    print(json.dumps(render(template, values), indent=2))
