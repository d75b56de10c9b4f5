"""Who an attachment is, and the names and records derived from it (no I/O).

- the host veth name (Calico's, so other Calico tools find it) and the link alias that marks its
  owner (a name is a hash that can collide; the alias says exactly which attachment a link is);
- the WorkloadEndpoint's namespace, name and JSON, as Calico writes them (docs/calico-plugin.md);
- the names Calico's validator refuses (`refused_name`), and the profiles an endpoint names with the
  content Calico gives them when it creates them (`profile_specs`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from calico_cni.model.keys import RESOURCES
from calico_cni.model.records import dumps

ALIAS_PREFIX = "calico:"
ALIAS_MAX = 255  # IFALIASZ - 1
K8S, CNI = "k8s", "cni"

# Calico's validator (libcalico-go/lib/validator/v3/validator.go, v3.30.0): a resource name, and
# the WorkloadEndpoint spec fields tagged `name` (node, pod, endpoint, profiles), is a lower-case
# DNS-1123 subdomain of at most 253 characters; `containerID` has its own pattern.
NAME_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
NAME_MAX = 253
LABEL_NAME_MAX = 63
CONTAINER_ID_FMT = "[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
# Checked by hand, not with `model.checks.dns_subdomain` (the same rule): importing `model.checks`
# (its selector parser, its compiled patterns) would cost every exec'd ADD about 2 ms.
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# kube-controllers' namespace profiles (libcalico-go/lib/backend/k8s/conversion: NamespaceToProfile).
NAMESPACE_PROFILE_PREFIX = "kns."
NAMESPACE_NAME_LABEL = "pcns.projectcalico.org/name"
PROFILES = RESOURCES + "profiles/"
# `model.kinds.API_VERSION`, written out: importing `model.kinds` (every kind's schema) would cost
# every exec'd ADD about 15 ms.
API_VERSION = "projectcalico.org/v3"


def _label_of(text: str, alnum: frozenset) -> bool:
    """Whether `text` matches <alnum>([-<alnum>]*<alnum>)?."""
    return bool(text) and text[0] in alnum and text[-1] in alnum and all(c in alnum or c == "-" for c in text)


def valid_name(text: str) -> bool:
    """Whether Calico's validator accepts `text` as a name: NAME_FMT, at most NAME_MAX characters."""
    return len(text) <= NAME_MAX and all(_label_of(label, _LOWER) for label in text.split("."))


def valid_container_id(text: str) -> bool:
    """Whether Calico's validator accepts `text` as a containerID: CONTAINER_ID_FMT."""
    return _label_of(text, _ALNUM)


def network_profile(network: str, kubernetes: bool) -> dict:
    """The spec Calico's plugin gives the profile named after the network when it creates it
    (cni-plugin/pkg/plugin/plugin.go, cmdAdd, v3.30.0): egress allow all; ingress allow from
    `has(<network>)`, or allow all for a Kubernetes pod; the network's name as a label."""
    ingress = _allow()
    if not kubernetes:
        ingress["source"] = {"selector": f"has({network})"}
    return {"ingress": [ingress], "egress": [_allow()], "labelsToApply": {network: ""}}


def namespace_profile(namespace: str) -> dict:
    """The spec kube-controllers gives `kns.<namespace>` (NamespaceToProfile, v3.30.0) for a namespace
    whose labels nobody here knows: allow all both ways, the namespace's name label."""
    return {"ingress": [_allow()], "egress": [_allow()], "labelsToApply": {NAMESPACE_NAME_LABEL: namespace}}


def _allow() -> dict:
    """An allow-all Rule as Go encodes it: Source and Destination (structs) are written even when
    empty, since `omitempty` skips no struct."""
    return {"action": "Allow", "source": {}, "destination": {}}


class ProfileRecord:
    """A Profile to create (revision 0: `Datastore.commit` then requires that it does not exist),
    as Calico's client stores it: kind and apiVersion set, name, uid and creationTimestamp. (A plain
    class: a dataclass costs the exec'd ADD its code generation.)"""

    def __init__(self, name: str, spec: dict, uid: str, created: str) -> None:
        self.name, self.spec, self.uid, self.created = name, spec, uid, created
        self.revision = 0

    @property
    def key(self) -> str:
        """/calico/resources/v3/projectcalico.org/profiles/<name>"""
        return PROFILES + self.name

    def doc(self) -> dict:
        """The stored document."""
        return {
            "kind": "Profile",
            "apiVersion": API_VERSION,
            "metadata": {"name": self.name, "uid": self.uid, "creationTimestamp": self.created},
            "spec": self.spec,
        }

    def to_json(self) -> bytes:
        """The JSON written to etcd."""
        return dumps(self.doc())


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
    # `policy.type: k8s`: a pod's endpoint names its namespace's profile instead of the network's.
    k8s_policy: bool = False

    @classmethod
    def of(cls, request, node: str, k8s_policy: bool = False) -> "Identity":
        """The identity of a CNI request (`k8s_pod` from CNI_ARGS decides the orchestrator)."""
        pod = request.k8s_pod
        return cls(request.network, request.container_id, request.ifname, node, *(pod or (None, None)), k8s_policy=k8s_policy)

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
        """The endpoint's profiles, as Calico's plugin names them: the network's name, or for a pod
        under `policy.type: k8s` its namespace's profile `kns.<namespace>` (cni-plugin/pkg/k8s/k8s.go,
        v3.30.0; Calico adds `ksa.<namespace>.<service account>`, which needs the Kubernetes API)."""
        return [NAMESPACE_PROFILE_PREFIX + str(self.pod_namespace)] if self.pod and self.k8s_policy else [self.network]

    def profile_specs(self) -> dict[str, dict]:
        """Each profile the endpoint names, with the spec it is created with when it is missing."""
        if self.pod and self.k8s_policy:
            return {self.profiles()[0]: namespace_profile(str(self.pod_namespace))}
        return {self.network: network_profile(self.network, kubernetes=bool(self.pod))}

    def refused_name(self) -> str | None:
        """Why Calico's validator would refuse this attachment's endpoint (its plugin then fails the
        ADD), naming the rule; None when it accepts it. Checked before IPAM on ADD only: DEL, CHECK
        and GC keep working for endpoints written before the rule."""
        if not valid_container_id(self.container_id):
            return (
                f"CNI_CONTAINERID {self.container_id[:80]!r} is refused: Calico's validator requires a container ID to match "
                f"{CONTAINER_ID_FMT} (letters, digits and '-', starting and ending with a letter or digit; no '_' or '.')"
            )
        rule = f"a lower-case DNS-1123 subdomain of at most {NAME_MAX} characters ({NAME_FMT})"
        named = [("the node name", self.node), ("CNI_IFNAME (the endpoint's spec.endpoint)", self.ifname)]
        if self.pod:
            named.append(("K8S_POD_NAME", self.pod))
        named += [(f"the profile {p!r} (spec.profiles)", p) for p in self.profiles()]
        for what, value in named:
            if not valid_name(value):
                return f"{what} {value[:80]!r} is refused: Calico's validator requires {rule}"
        if self.network in self.profiles() and len(self.network) > LABEL_NAME_MAX:
            return (
                f"the network name {self.network[:80]!r} is refused: its profile applies it as a label key, "
                f"which Calico's validator limits to {LABEL_NAME_MAX} characters"
            )
        if not valid_name(self.endpoint_name):
            source = "K8S_POD_NAME" if self.pod else "CNI_CONTAINERID (upper case is allowed in a container ID but not in a name)"
            return f"the endpoint name {self.endpoint_name[:120]!r}, made of node, {source} and interface, is refused: Calico's validator requires {rule}"
        return None

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
            "apiVersion": API_VERSION,
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
