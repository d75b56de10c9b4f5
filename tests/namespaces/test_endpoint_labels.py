"""Issue 18 through the `calico` executable: an ADD writes the labels of the network config's args
(`args.cni.labels`, and Mesos' network_info labels sanitised as Calico's plugin sanitises them, whose
`projectcalico.org/namespace` puts the endpoint in that namespace) into its WorkloadEndpoint with
Calico's two labels; a label Calico's validator refuses fails the ADD with error 7 before anything is
allocated, and DEL of the same config removes the endpoint from the namespace ADD put it in."""

from __future__ import annotations

import pytest

from tests.calico_support import held_addresses, ok, pod_env, pod_links, run_calico
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

pools = pools_fixture(("v4", "198.18.21.0/24", 26))
MESOS = "org.apache.mesos"
K8S_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web-apps;K8S_POD_NAME=front-end-1;K8S_POD_UID=abc"


def labels_args(mesos: list | None = None, cni: list | None = None) -> dict:
    args: dict = {}
    if mesos is not None:
        args[MESOS] = {"network_info": {"name": "net1", "labels": {"labels": [{"key": k, "value": v} for k, v in mesos]}}}
    if cni is not None:
        args["cni"] = {"labels": [{"key": k, "value": v} for k, v in cni]}
    return args


def test_add_writes_the_args_labels_and_del_removes_the_endpoint(store, pools, node, pod, calico_conf):
    p = pod()
    conf = calico_conf(args=labels_args(mesos=[("DCOS_SPACE", "/my group/app"), ("projectcalico.org/namespace", "mesos-ns")], cni=[("app", "web")]))
    env = pod_env(p, container_id="ctr-labels")
    ok(run_calico(node, "ADD", conf, env))
    endpoint = store.workload_endpoint("mesos-ns", "node1-cni-ctr--labels-eth0")
    assert endpoint is not None, [e.name for e in store.workload_endpoints()]
    assert endpoint.doc["metadata"]["labels"] == {
        "DCOS_SPACE": "my-group.app",
        "app": "web",
        "projectcalico.org/namespace": "mesos-ns",
        "projectcalico.org/orchestrator": "cni",
    }
    ok(run_calico(node, "DEL", conf, env))
    assert store.workload_endpoints() == [] and held_addresses(store) == {}


def test_a_pod_gets_cni_labels_and_not_mesos_ones(store, pools, node, pod, calico_conf):
    conf = calico_conf(args=labels_args(mesos=[("projectcalico.org/namespace", "elsewhere"), ("m", "x")], cni=[("role", "db")]))
    env = pod_env(pod(), CNI_ARGS=K8S_ARGS)
    ok(run_calico(node, "ADD", conf, env))
    endpoint = store.workload_endpoint("web-apps", "node1-k8s-front--end--1-eth0")
    assert endpoint is not None, [e.name for e in store.workload_endpoints()]
    assert endpoint.doc["metadata"]["labels"] == {"role": "db", "projectcalico.org/namespace": "web-apps", "projectcalico.org/orchestrator": "k8s"}
    # DEL finds it in the pod's namespace, not in the mesos label's.
    ok(run_calico(node, "DEL", conf, env))
    assert store.workload_endpoints() == [] and held_addresses(store) == {}


@pytest.mark.parametrize(
    "args, words",
    [
        (labels_args(cni=[("app", "not ok")]), ["app=not ok", "invalid label value"]),
        (labels_args(mesos=[("_x", "v")]), ["_x=v", "invalid label key"]),
        (labels_args(mesos=[("projectcalico.org/namespace", "Upper")]), ["namespace 'Upper'"]),
        ({"cni": {"labels": ["app=web"]}}, ["args.cni.labels[0]"]),
    ],
    ids=["cni-value", "mesos-key", "mesos-namespace", "cni-shape"],
)
def test_labels_calico_refuses_fail_add_with_7_before_ipam(store, pools, node, pod, calico_conf, args, words):
    p = pod()
    run = run_calico(node, "ADD", calico_conf(args=args), pod_env(p))
    assert run.rc != 0 and run.out["code"] == 7, run.out
    for word in words:
        assert word in run.out["msg"], (word, run.out["msg"])
    assert store.workload_endpoints() == [] and pod_links(p) == []
    assert store.client.get_prefix("/calico/ipam/v2/", keys_only=True) == []
