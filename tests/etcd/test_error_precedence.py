"""With two things wrong in one request, the same error wins as before the verbs parsed their
configuration once at their top: a runtime's logs and an operator's runbook name the first problem
the plugin reports, so which one that is must not change with the code's structure."""

from __future__ import annotations

import pytest

from tests.conftest import cni_env, run_plugin

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


def without_node(conf: dict) -> dict:
    """The config with no node name and a node-name file that does not exist."""
    out = {k: v for k, v in conf.items() if k != "nodename"}
    out["nodename_file"] = "/nonexistent/nodename"
    return out


def test_calico_ipam_add_reports_a_bad_requested_address_before_the_node_name(ipam_conf):
    conf = without_node(ipam_conf())
    run = run_plugin("calico-ipam", "ADD", conf, cni_env("c1", CNI_ARGS="IP=not-an-address"))
    assert run.rc != 0 and run.out["code"] == 4 and "CNI_ARGS IP" in run.out["msg"], run.stdout
    # Each alone is still reported.
    assert run_plugin("calico-ipam", "ADD", conf, cni_env("c1")).out["code"] == 7
    alone = run_plugin("calico-ipam", "ADD", ipam_conf(), cni_env("c1", CNI_ARGS="IP=not-an-address"))
    assert alone.rc != 0 and alone.out["code"] == 4 and "CNI_ARGS IP" in alone.out["msg"], alone.stdout


@pytest.mark.parametrize("plugin", ["calico", "calico-ipam"])
def test_gc_reports_missing_valid_attachments_before_the_node_name(ipam_conf, plugin):
    conf = {**without_node(ipam_conf(cni_version="1.1.0")), "type": plugin}
    run = run_plugin(plugin, "GC", conf, {"CNI_PATH": cni_env()["CNI_PATH"]})
    if plugin == "calico-ipam":
        # calico-ipam always resolved its node name first (with its other settings).
        assert run.rc != 0 and run.out["code"] == 7 and "nodename" in run.out.get("details", ""), run.stdout
    else:
        assert run.rc != 0 and run.out["code"] == 7 and "valid-attachments" in run.out["msg"], run.stdout


def test_calico_reports_an_unusable_etcd_key_only_when_it_needs_etcd(ipam_conf):
    """calico parses its etcd keys with its other settings but reports them when the verb first
    needs etcd: an ADD into a network namespace that does not exist says so first, and a DEL still
    reports the etcd key (after tearing down what needs no datastore)."""
    conf = {**ipam_conf(), "type": "calico", "datastore_type": "kubernetes"}
    run = run_plugin("calico", "ADD", conf, cni_env("c1", netns_path="/nonexistent/netns"))
    assert run.rc != 0 and run.out["code"] == 4 and "CNI_NETNS" in run.out["msg"], run.stdout
    run = run_plugin("calico", "DEL", conf, cni_env("c1", netns_path=""))
    assert run.rc != 0 and run.out["code"] == 7 and "datastore_type" in run.out["msg"], run.stdout
