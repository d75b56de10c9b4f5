"""Who an attachment is, and the names and records derived from it (no I/O).

- the host veth name (Calico's, so other Calico tools find it) and the link alias that marks its
  owner (a name is a hash that can collide; the alias says exactly which attachment a link is);
- the WorkloadEndpoint's namespace, name and JSON, as Calico writes them (docs/calico-plugin.md);
- the names Calico's validator refuses (`refused_name`), and the profiles an endpoint names with the
  content Calico gives them when it creates them (`profile_specs`);
- the endpoint's labels from the network config's `args` (`args_labels`): `args.cni.labels` (the CNI
  conventions' form) and Mesos' `args["org.apache.mesos"].network_info.labels.labels`, sanitised as
  Calico's plugin sanitises them.
"""

from __future__ import annotations

import re  # already imported by json on the exec path: no cost; patterns compiled only for Mesos labels
from dataclasses import dataclass
from typing import Any, Mapping

from calico_cni.model.keys import RESOURCES
from calico_cni.model.records import dumps

try:
    # The interpreter's own digests: hashlib loads OpenSSL, 3 ms of every in-process plugin run.
    from _sha1 import sha1
except ImportError:  # an interpreter built without it
    from hashlib import sha1
try:
    from _sha256 import sha256
except ImportError:  # Python 3.12 and later name the SHA-2 one _sha2
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

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
# The labels Calico's client sets on every WorkloadEndpoint it stores, over any given label of the
# same key (libcalico-go/lib/clientv3/workloadendpoint.go, updateLabelsForStorage, v3.30.0).
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
MESOS_ARGS = "org.apache.mesos"
LABEL_VALUE_MAX = 63
_LABEL_CHARS = _ALNUM | frozenset("-_.")


def _label_of(text: str, alnum: frozenset) -> bool:
    """Whether `text` matches <alnum>([-<alnum>]*<alnum>)?."""
    return bool(text) and text[0] in alnum and text[-1] in alnum and all(c in alnum or c == "-" for c in text)


def _label_token(text: str) -> bool:
    """Whether `text` is a label key's name part or a non-empty label value as Kubernetes'
    validation (which Calico's uses) has it, the two rules being the same: at most 63 letters, digits, '-', '_' or '.', starting and ending with a
    letter or digit."""
    return 0 < len(text) <= LABEL_VALUE_MAX and text[0] in _ALNUM and text[-1] in _ALNUM and all(c in _LABEL_CHARS for c in text)


def label_problem(key: str, value: str) -> str | None:
    """Why Calico's validator refuses the label `key`=`value` (IsQualifiedName for the key,
    IsValidLabelValue for the value); None when it accepts it. Written out rather than taken from
    `model.checks` (the same rules) to keep that module's import off the exec'd ADD."""
    prefix, slash, name = key.rpartition("/")
    if (slash and (not prefix or not valid_name(prefix))) or not _label_token(name):
        return f"invalid label key {key[:80]!r}: expected [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, the prefix a lower-case DNS subdomain"
    if value and not _label_token(value):
        return f"invalid label value {value[:80]!r} (key {key[:80]!r}): at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    return None


def sanitize_mesos_label(text: str) -> str:
    """A Mesos label key or value made into a Calico label as Calico's plugin makes it
    (cni-plugin/internal/pkg/utils/utils.go, SanitizeMesosLabel, v3.30.0): '/' becomes '.', every
    run of other characters than letters, digits, '-', '_' and '.' becomes '-', every run of '.' and
    '-' holding a '.' becomes '.', and leading and trailing '.' and '-' go. The result can still be
    refused (too long, or starting with '_'): Calico's validator then refuses the endpoint."""
    text = text.replace("/", ".")
    text = re.sub(r"[^-_.a-zA-Z0-9]+", "-", text)
    text = re.sub(r"[.-]*[.][.-]*", ".", text)
    return text.strip(".-")


class ArgsLabels:
    """The labels and namespace the network config's `args` give an endpoint, and what is wrong with
    them (`problem`: the ADD is refused, naming the entry; DEL, CHECK and GC never look at it).
    (A plain class: a dataclass costs the exec'd ADD its code generation.)"""

    def __init__(self, labels: tuple[tuple[str, str], ...] = (), namespace: str | None = None, problem: str | None = None) -> None:
        self.labels, self.namespace, self.problem = labels, namespace, problem


def _fields(entry: dict, name: str) -> list[Any]:
    """The non-null values of `entry`'s keys equal to `name` ignoring case, in order: Go's
    encoding/json (which Calico's plugin decodes these labels with) matches a struct field's name
    case-insensitively, lets a later key overwrite an earlier one and leaves a field as it was (a
    string "") for null. Matched here by hand: the exec'd ADD decodes with Python's json."""
    return [v for k, v in entry.items() if k.lower() == name and v is not None]


def _label_entries(entries: Any, where: str) -> list[tuple[str, str]]:
    """`[{"key", "value"}]` as (key, value) pairs, read as Calico's plugin reads them: field names in
    any case ({"Key": ..., "Value": ...}), a missing or null value being "". ValueError naming the
    entry when it is not that (no key, or a key or value that is not a string)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f'{where} must be a list of {{"key": ..., "value": ...}} objects')
    pairs = []
    for i, entry in enumerate(entries):
        keys = _fields(entry, "key") if isinstance(entry, dict) else []
        values = _fields(entry, "value") if isinstance(entry, dict) else []
        if not keys or not all(isinstance(v, str) for v in keys + values):
            raise ValueError(f'{where}[{i}] {str(entry)[:80]} is not a {{"key": <string>, "value": <string>}} object')
        pairs.append((keys[-1], values[-1] if values else ""))
    return pairs


def _dig(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """config[path[0]][path[1]]..., None where a level is missing; ValueError when a level is not an object."""
    value: Any = config
    for i, key in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{'.'.join(path[:i]) or 'the network config'} must be an object")
        value = value.get(key)
    return value


def args_labels(config: Mapping[str, Any], pod: bool) -> ArgsLabels:
    """The endpoint labels of a network config's `args`, in order (a later entry of the same key
    wins): Mesos' `args["org.apache.mesos"].network_info.labels.labels`, sanitised as Calico sanitises
    them and read, as Calico reads them, only for an endpoint that is not a Kubernetes pod (the key
    `projectcalico.org/namespace` sets the endpoint's namespace instead); then `args.cni.labels` (the
    CNI conventions' form, used as given; Calico does not read it). A label Calico's validator would
    refuse, or an entry of the wrong shape, is the `problem`."""
    labels: dict[str, str] = {}
    namespace = None
    try:
        if not pod:
            for key, value in _label_entries(
                _dig(config, ("args", MESOS_ARGS, "network_info", "labels", "labels")), f'args["{MESOS_ARGS}"].network_info.labels.labels'
            ):
                # Calico compares the key as given, and uses the sanitised value.
                if key == NAMESPACE_LABEL:
                    namespace = sanitize_mesos_label(value)
                else:
                    labels[sanitize_mesos_label(key)] = sanitize_mesos_label(value)
        for key, value in _label_entries(_dig(config, ("args", "cni", "labels")), "args.cni.labels"):
            labels[key] = value
    except ValueError as exc:
        return ArgsLabels(problem=f"the network config's {exc}")
    pairs = tuple(labels.items())
    for key, value in pairs:
        problem = label_problem(key, value)
        if problem:
            return ArgsLabels(
                pairs, namespace, f"the endpoint label {key[:80]}={value[:80]} from the network config's args is refused by Calico's validator: {problem}"
            )
    if namespace is not None and not (len(namespace) <= LABEL_VALUE_MAX and _label_of(namespace, _LOWER)):
        return ArgsLabels(
            pairs,
            None,
            f"the namespace {namespace[:80]!r} (from the Mesos label {NAMESPACE_LABEL}, sanitised) is refused: a namespace is a lower-case DNS-1123 label of at most 63 characters",
        )
    return ArgsLabels(pairs, namespace)


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
    # The endpoint's own labels from the network config's args (`args_labels`), in order.
    labels: tuple[tuple[str, str], ...] = ()
    # A plain-CNI endpoint's namespace from Mesos' labels (None: `default`).
    args_namespace: str | None = None
    # Why the args' labels are refused (the ADD fails with it; other verbs ignore it).
    labels_problem: str | None = None

    @classmethod
    def of(cls, request, node: str, k8s_policy: bool = False) -> "Identity":
        """The identity of a CNI request (`k8s_pod` from CNI_ARGS decides the orchestrator; the
        network config's `args` give labels and, for a plain-CNI endpoint, maybe its namespace)."""
        pod = request.k8s_pod
        given = args_labels(request.config, pod=pod is not None)
        return cls(
            request.network,
            request.container_id,
            request.ifname,
            node,
            *(pod or (None, None)),
            k8s_policy=k8s_policy,
            labels=given.labels,
            args_namespace=given.namespace,
            labels_problem=given.problem,
        )

    @property
    def orchestrator(self) -> str:
        """ "k8s" for a pod, "cni" otherwise."""
        return K8S if self.pod else CNI

    @property
    def namespace(self) -> str:
        """The endpoint's namespace: the pod's, else the one Mesos' labels name, else `default`."""
        return self.pod_namespace if self.pod else (self.args_namespace or "default")

    @property
    def endpoint_name(self) -> str:
        """node, orchestrator, pod name or container ID, interface name; '-' doubled in each, joined by '-'."""
        workload = self.pod if self.pod else self.container_id
        return "-".join(escape_segment(s) for s in (self.node, self.orchestrator, workload, self.ifname))

    @property
    def host_veth(self) -> str:
        """`cali` + 11 hex characters of sha1 ("<namespace>.<pod>" for pods, else "<network>.<containerID>.<ifname>")."""
        seed = f"{self.pod_namespace}.{self.pod}" if self.pod else f"{self.network}.{self.container_id}.{self.ifname}"
        return "cali" + sha1(seed.encode()).hexdigest()[:11]

    @property
    def alias(self) -> str:
        """The host veth's alias, `calico:<network>/<containerID>/<ifname>`; when that is longer than a
        link alias may be, `calico:sha256:<hex of "<network>/<containerID>/<ifname>">`."""
        body = f"{self.network}/{self.container_id}/{self.ifname}"
        alias = ALIAS_PREFIX + body
        if len(alias.encode()) > ALIAS_MAX:
            alias = ALIAS_PREFIX + "sha256:" + sha256(body.encode()).hexdigest()
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
        ADD), naming the rule or the label of the network config's args; None when it accepts it. Checked before IPAM on ADD only: DEL, CHECK
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
        return self.labels_problem

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
                # The args' labels, then the two Calico's client sets over any given one.
                "labels": {**dict(self.labels), NAMESPACE_LABEL: self.namespace, ORCHESTRATOR_LABEL: self.orchestrator},
            },
            "spec": spec,
        }
