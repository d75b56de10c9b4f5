"""Calico's etcd v3 key layout (libcalico-go, etcd mode)."""

from __future__ import annotations

RESOURCES = "/calico/resources/v3/projectcalico.org/"
IPAM = "/calico/ipam/v2/"

POOLS = RESOURCES + "ippools/"
NODES = RESOURCES + "nodes/"
RESERVATIONS = RESOURCES + "ipreservations/"
WORKLOAD_ENDPOINTS = RESOURCES + "workloadendpoints/"
HANDLES = IPAM + "handle/"
IPAM_CONFIG = IPAM + "config"
# Calico's one ClusterInformation record (its datastoreReady flag gates IPAM).
CLUSTER_INFORMATION = RESOURCES + "clusterinformations/default"


def cidr_segment(cidr: str) -> str:
    """"10.0.0.0/26" -> "10.0.0.0-26" (how Calico puts a CIDR into a key)."""
    return cidr.replace("/", "-", 1)


def segment_cidr(segment: str) -> str:
    """The inverse of `cidr_segment`."""
    addr, _, prefix = segment.rpartition("-")
    return f"{addr}/{prefix}"


def family_of(cidr: str) -> int:
    """4 or 6."""
    return 6 if ":" in cidr else 4


def pool(name: str) -> str:
    """The key of an IP pool."""
    return POOLS + name


def node(name: str) -> str:
    """The key of a Node resource."""
    return NODES + name


def blocks(family: int) -> str:
    """Prefix of every block of one family."""
    return f"{IPAM}assignment/ipv{family}/block/"


def block(cidr: str) -> str:
    """The key of an allocation block."""
    return blocks(family_of(cidr)) + cidr_segment(cidr)


def host_affinities(node_name: str, family: int | None = None) -> str:
    """Prefix of a node's block affinities (of one family, or of both)."""
    base = f"{IPAM}host/{node_name}/"
    return base if family is None else f"{base}ipv{family}/block/"


def affinity(node_name: str, cidr: str) -> str:
    """The key of a node's affinity to a block."""
    return host_affinities(node_name, family_of(cidr)) + cidr_segment(cidr)


def parse_affinity(key: str) -> tuple[str, str] | None:
    """(node, block cidr) of an affinity key, or None when the key is not one."""
    if not key.startswith(IPAM + "host/"):
        return None
    parts = key[len(IPAM + "host/") :].split("/")
    if len(parts) != 4 or parts[2] != "block":
        return None
    return parts[0], segment_cidr(parts[3])


def parse_block(key: str) -> str:
    """The block cidr of a block key."""
    return segment_cidr(key.rsplit("/", 1)[1])


def handle(handle_id: str) -> str:
    """The key of an IPAM handle."""
    return HANDLES + handle_id


def attachment_handle(network: str, container_id: str) -> str:
    """The IPAM handle of an attachment: `<network>.<containerID>` (Calico's format, which GC and
    calicoctl match records against)."""
    return f"{network}.{container_id}"


def workload_endpoint(namespace: str, name: str) -> str:
    """The key of a WorkloadEndpoint."""
    return f"{WORKLOAD_ENDPOINTS}{namespace}/{name}"
