"""Endpoint labels from the network config's `args` (issue 18): `args.cni.labels` (the CNI
conventions' form) and Mesos' `args["org.apache.mesos"].network_info.labels.labels`, sanitised as
Calico's plugin sanitises them (cni-plugin/internal/pkg/utils/utils.go SanitizeMesosLabel and
plugin.go cmdAdd, v3.30.0), into the WorkloadEndpoint an ADD writes; labels Calico's validator
refuses fail the ADD (`refused_name`) before anything is allocated."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from calico_cni.model.schema import Invalid
from calico_cni.protocol.request import CniRequest
from calico_cni.workload import Identity, args_labels, label_problem, sanitize_mesos_label
from tests.kinds_support import decode

MESOS = "org.apache.mesos"
K8S_ARGS = {"K8S_POD_NAMESPACE": "web", "K8S_POD_NAME": "front-1"}


def mesos(*pairs: tuple[str, str]) -> dict:
    return {MESOS: {"network_info": {"name": "net1", "labels": {"labels": [{"key": k, "value": v} for k, v in pairs]}}}}


def cni(*pairs: tuple[str, str]) -> dict:
    return {"cni": {"labels": [{"key": k, "value": v} for k, v in pairs]}}


def request(args: dict | None = None, cni_args: dict | None = None) -> CniRequest:
    config = {"cniVersion": "1.0.0", "name": "net1", "type": "calico"}
    if args is not None:
        config["args"] = args
    return CniRequest(command="ADD", cni_version="1.0.0", config=config, container_id="c1", netns="/x", ifname="eth0", args=cni_args or {})


def ident(args: dict | None = None, cni_args: dict | None = None) -> Identity:
    return Identity.of(request(args, cni_args), "node1")


def doc(identity: Identity) -> dict:
    return identity.endpoint_doc("cali0", "ee:ee:ee:ee:ee:ee", ["198.18.0.1/32"], "uid", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "given, sanitised",
    [
        ("app", "app"),
        ("team/web", "team.web"),  # '/' becomes '.'
        ("a b  c", "a-b-c"),  # a run of other characters becomes one '-'
        ("caf\u00e9 cr\u00e8me", "caf-cr-me"),  # any non-ASCII character is "other"
        ("a.-.b", "a.b"),  # a run of '.' and '-' holding a '.' becomes '.'
        ("a--b", "a--b"),  # a run of '-' alone stays
        ("--.x.--", "x"),  # leading and trailing '.' and '-' go
        ("_x_", "_x_"),  # '_' is kept, even at the ends (the validator then refuses it)
        ("///", ""),
        ("", ""),
    ],
)
def test_mesos_labels_are_sanitised_as_calico_sanitises_them(given, sanitised):
    assert sanitize_mesos_label(given) == sanitised


def test_no_args_gives_only_calicos_two_labels():
    assert doc(ident())["metadata"]["labels"] == {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"}
    assert ident({"unrelated": 1}).refused_name() is None


def test_cni_labels_are_the_endpoints_labels_with_calicos_two():
    identity = ident(cni(("app", "web"), ("tier", ""), ("example.com/team", "a_b.c-d")))
    assert identity.refused_name() is None
    assert doc(identity)["metadata"]["labels"] == {
        "app": "web",
        "tier": "",
        "example.com/team": "a_b.c-d",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "cni",
    }


def test_mesos_labels_sanitised_and_the_namespace_key_sets_the_namespace():
    identity = ident(mesos(("DCOS_SPACE", "/my group/app"), ("projectcalico.org/namespace", "prod"), ("team/x", "a b")))
    assert identity.refused_name() is None
    assert identity.namespace == "prod"
    d = doc(identity)
    assert d["metadata"]["namespace"] == "prod"
    assert d["metadata"]["labels"] == {
        "DCOS_SPACE": "my-group.app",
        "team.x": "a-b",
        "projectcalico.org/namespace": "prod",
        "projectcalico.org/orchestrator": "cni",
    }


def test_calicos_labels_win_over_given_ones_as_its_client_sets_them_last():
    d = doc(ident(cni(("projectcalico.org/orchestrator", "mesos"), ("projectcalico.org/namespace", "other"))))
    assert d["metadata"]["labels"]["projectcalico.org/orchestrator"] == "cni"
    assert d["metadata"]["labels"]["projectcalico.org/namespace"] == "default"


def test_cni_labels_win_over_mesos_labels_of_the_same_key():
    d = doc(ident({**mesos(("app", "one")), **cni(("app", "two"))}))
    assert d["metadata"]["labels"]["app"] == "two"


def test_a_pod_takes_cni_labels_but_not_mesos_ones_as_calicos_kubernetes_path_reads_none():
    identity = ident({**mesos(("app", "m"), ("projectcalico.org/namespace", "elsewhere")), **cni(("role", "db"))}, K8S_ARGS)
    assert identity.namespace == "web"
    labels = doc(identity)["metadata"]["labels"]
    assert labels == {"role": "db", "projectcalico.org/namespace": "web", "projectcalico.org/orchestrator": "k8s"}


@pytest.mark.parametrize(
    "args, phrase",
    [
        (cni(("bad key", "v")), "label bad key=v"),
        (cni(("app", "not ok")), "invalid label value 'not ok'"),
        (cni(("app", "x" * 64)), "invalid label value"),
        (cni(("Example.COM/app", "v")), "invalid label key"),
        (cni(("/app", "v")), "invalid label key"),
        (mesos(("_private", "v")), "label _private=v"),  # sanitised, still starting with '_'
        (mesos(("app", "v" * 64)), "invalid label value"),
        (mesos(("projectcalico.org/namespace", "Prod")), "the namespace 'Prod'"),
        (mesos(("projectcalico.org/namespace", "///")), "the namespace ''"),
        ({"cni": {"labels": {"app": "web"}}}, "args.cni.labels must be a list"),
        ({"cni": {"labels": [{"key": "app", "value": 3}]}}, "args.cni.labels[0]"),
        ({"cni": {"labels": ["app=web"]}}, "args.cni.labels[0]"),
        ({"cni": "labels"}, "args.cni must be an object"),
        ({MESOS: {"network_info": {"labels": {"labels": [{"value": "x"}]}}}}, 'args["org.apache.mesos"].network_info.labels.labels[0]'),
        ({"cni": {"labels": [{"key": None, "value": "x"}]}}, "args.cni.labels[0]"),
        ({"cni": {"labels": [{"Key": "app", "VALUE": 3}]}}, "args.cni.labels[0]"),  # a mis-typed field, whatever its case
        ({"cni": {"labels": [{"key": "app", "Key": 3}]}}, "args.cni.labels[0]"),
    ],
)
def test_labels_calicos_validator_refuses_fail_the_add_naming_the_entry(args, phrase):
    identity = ident(args)
    reason = identity.refused_name()
    assert reason is not None and phrase in reason, reason


def test_a_refused_label_does_not_change_the_names_del_uses():
    identity = ident({**mesos(("projectcalico.org/namespace", "prod")), **cni(("bad key", "v"))})
    assert identity.refused_name() is not None
    assert (identity.namespace, identity.endpoint_name) == ("prod", "node1-cni-c1-eth0")


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("a", "", True),
        ("a" * 63, "b" * 63, True),
        ("a" * 64, "", False),
        ("x.example.com/" + "a" * 63, "v", True),
        ("a/b/c", "", False),
        ("a", "-b", False),
        ("a_b.c", "A_b.C", True),
    ],
)
def test_label_rules_are_kubernetes_ones(key, value, ok):
    assert (label_problem(key, value) is None) == ok


def test_args_labels_of_a_config_without_args():
    got = args_labels({"name": "net1"}, pod=False)
    assert (got.labels, got.namespace, got.problem) == ((), None, None)


@pytest.mark.parametrize(
    "entry, pair",
    [
        ({"key": "app", "value": "web"}, ("app", "web")),
        ({"Key": "app", "Value": "web"}, ("app", "web")),  # Go's encoding/json matches field names ignoring case
        ({"KEY": "app", "vAlUe": "web"}, ("app", "web")),
        ({"key": "app", "value": None}, ("app", "")),  # null leaves Go's string field "" ...
        ({"key": "app"}, ("app", "")),  # ... as a missing one does
        ({"key": "app", "value": "one", "Value": "two"}, ("app", "two")),  # the later key wins, as in Go
        ({"key": "app", "value": "one", "Value": None}, ("app", "one")),  # a later null changes nothing
    ],
)
def test_label_entries_are_read_as_gos_encoding_json_reads_them(entry, pair):
    for args in ({"cni": {"labels": [entry]}}, {MESOS: {"network_info": {"labels": {"labels": [entry]}}}}):
        got = args_labels({"args": args}, pod=False)
        assert got.problem is None and got.labels == (pair,), (args, got.problem)


def endpoint_with_label(key: str, value: str) -> dict:
    return {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "node1-cni-c1-eth0", "namespace": "default", "labels": {key: value}},
        "spec": {
            "node": "node1",
            "orchestrator": "cni",
            "containerID": "c1",
            "endpoint": "eth0",
            "interfaceName": "cali0",
            "ipNetworks": ["198.18.0.5/32"],
            "profiles": ["net1"],
        },
    }


def calicoctl_accepts(key: str, value: str) -> bool:
    """Whether calicoctl's validation (model.kinds.decode, through model.checks) accepts a
    WorkloadEndpoint carrying the label `key`=`value`."""
    try:
        decode(endpoint_with_label(key, value))
    except Invalid:
        return False
    return True


# Characters at the rules' edges: letters of both cases, digits, the three allowed punctuation marks,
# '/', and some that are refused (a space, a non-ASCII letter, a non-ASCII digit, a newline).
_CHARS = "aZz09-_./ \u00e9\u0663\n"
_token = st.one_of(
    st.text(alphabet=_CHARS, max_size=8),
    st.builds(lambda c, n, e: c + "a" * n + e, st.sampled_from("aZ9_-."), st.integers(60, 64), st.sampled_from(["", "b", "-", "."])),
)
_prefix = st.one_of(
    st.text(alphabet="az09-.", max_size=12),
    st.builds(lambda n: ".".join(["a" * 63] * 3) + "." + "b" * n, st.integers(58, 64)),  # around 253 characters
)
_key = st.one_of(_token, st.builds(lambda p, n: f"{p}/{n}", _prefix, _token), st.builds(lambda a, b, c: f"{a}/{b}/{c}", _token, _token, _token))


@settings(max_examples=400, deadline=None)
@given(key=_key, value=_token)
@example(key="a" * 63, value="b" * 63)
@example(key="a" * 64, value="")
@example(key="x.example.com/" + "a" * 63, value="v")
@example(key="X.example.com/a", value="v")
@example(key="/a", value="")
@example(key="a/", value="")
@example(key="a\n", value="")
@example(key="a", value="b\n")
@example(key="\u0663", value="")
def test_label_problem_agrees_with_calicoctls_validation(key, value):
    """`label_problem` is written out (to keep model.checks off the exec'd ADD): it must accept
    exactly the labels calicoctl's validation accepts on a WorkloadEndpoint, so the copies cannot drift."""
    assert (label_problem(key, value) is None) == calicoctl_accepts(key, value), (key, value, label_problem(key, value))
