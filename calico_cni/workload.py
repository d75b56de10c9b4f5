"""Who an attachment is, and the names and records derived from it (no I/O).

- the host veth name (Calico's, so other Calico tools find it) and the link alias that marks its
  owner (a name is a hash that can collide; the alias says exactly which attachment a link is);
- the WorkloadEndpoint's namespace, name and JSON, as Calico writes them (docs/calico-plugin.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ALIAS_PREFIX = "calico:"
ALIAS_MAX = 255  # IFALIASZ - 1
K8S, CNI = "k8s", "cni"


def escape_segment(text: str) -> str:
    """A name segment with every '-' doubled (Calico's endpoint-name escaping)."""
    return text.replace("-", "--")


def endpoint_of(endpoint, container_id: str | None, ifname: str | None) -> bool:
    """Whether a WorkloadEndpoint is the one of the attachment (container_id, ifname): only when
    its containerID and interface match (one that records no interface matches any), so a DEL of an
    old sandbox never deletes the endpoint of a newer sandbox of the same pod."""
    spec = endpoint.doc.get("spec") or {}
    return spec.get("containerID") == container_id and spec.get("endpoint", ifname) == ifname


@dataclass(frozen=True)
class Identity:
    """One attachment (network, container ID, interface name) on one node: the unit addresses,
    links and endpoints belong to (one container may have several interfaces)."""

    network: str
    container_id: str
    ifname: str
    node: str
    pod_namespace: str | None = None
    pod: str | None = None

    @classmethod
    def of(cls, request, node: str) -> "Identity":
        """The identity of a CNI request (`k8s_pod` from CNI_ARGS decides the orchestrator)."""
        pod = request.k8s_pod
        return cls(request.network, request.container_id, request.ifname, node, *(pod or (None, None)))

    @property
    def orchestrator(self) -> str:
        """"k8s" for a pod, "cni" otherwise."""
        return K8S if self.pod else CNI

    @property
    def namespace(self) -> str:
        """The endpoint's namespace: the pod's, else `default`."""
        return self.pod_namespace if self.pod else "default"

    @property
    def endpoint_name(self) -> str:
        """node, orchestrator, pod name or container ID, interface name; '-' doubled in each, joined by '-'."""
        workload = self.pod if self.pod else self.container_id
        return "-".join(escape_segment(s) for s in (self.node, self.orchestrator, workload, self.ifname))

    @property
    def host_veth(self) -> str:
        """`cali` + 11 hex characters of sha1 ("<namespace>.<pod>" for pods, else "<network>.<containerID>.<ifname>")."""
        seed = f"{self.pod_namespace}.{self.pod}" if self.pod else f"{self.network}.{self.container_id}.{self.ifname}"
        return "cali" + hashlib.sha1(seed.encode()).hexdigest()[:11]

    @property
    def alias(self) -> str:
        """The host veth's alias, `calico:<network>/<containerID>/<ifname>`; when that is longer than a
        link alias may be, `calico:sha256:<hex of "<network>/<containerID>/<ifname>">`."""
        body = f"{self.network}/{self.container_id}/{self.ifname}"
        alias = ALIAS_PREFIX + body
        if len(alias.encode()) > ALIAS_MAX:
            alias = ALIAS_PREFIX + "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        return alias

    def owns_alias(self, alias: str) -> bool:
        """Whether a link alias is this attachment's."""
        return alias == self.alias

    def owns_endpoint(self, endpoint) -> bool:
        """Whether an endpoint is this attachment's (`endpoint_of`)."""
        return endpoint_of(endpoint, self.container_id, self.ifname)

    def profiles(self) -> list[str]:
        """Calico's profiles: `kns.<namespace>` for pods, the network name otherwise."""
        return [f"kns.{self.pod_namespace}"] if self.pod else [self.network]

    def endpoint_doc(self, host_veth: str, mac: str, ip_networks: list[str], uid: str, created: str) -> dict:
        """The WorkloadEndpoint resource as Calico stores it."""
        spec = {
            "orchestrator": self.orchestrator,
            "node": self.node,
            "containerID": self.container_id,
        }
        if self.pod:
            spec["pod"] = self.pod
        spec.update(
            endpoint=self.ifname,
            ipNetworks=ip_networks,
            profiles=self.profiles(),
            interfaceName=host_veth,
            mac=mac,
        )
        return {
            "kind": "WorkloadEndpoint",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {
                "name": self.endpoint_name,
                "namespace": self.namespace,
                "uid": uid,
                "creationTimestamp": created,
                "labels": {
                    "projectcalico.org/namespace": self.namespace,
                    "projectcalico.org/orchestrator": self.orchestrator,
                },
            },
            "spec": spec,
        }
