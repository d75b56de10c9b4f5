"""`calicoctl version` (the client's version, the cluster's from ClusterInformation `default`), and
the configuration file calicoctl reads when no --config is given (/etc/calico/calicoctl.cfg), with
the flags winning over it."""

from __future__ import annotations

import pytest
import yaml

from calico_cni.ctl import context
from calico_cni.model import kinds
from calico_cni.model.resource import Resource
from tests.calicoctl_support import Run, run_exe

API = "projectcalico.org/v3"
# No endpoint from the environment: only the file (or a flag) may say where etcd is.
NO_ENV = {"ETCD_ENDPOINTS": None, "CALICO_ETCD_ENDPOINTS": None, "ETCD_AUTHORITY": None}
UNREACHABLE = "http://127.0.0.1:1"


def ok(r: Run) -> Run:
    assert r.rc == 0, (r.stdout, r.stderr)
    return r


def plant_cluster_information(store, **spec) -> None:
    kind, doc = kinds.decode({"apiVersion": API, "kind": "ClusterInformation", "metadata": {"name": "default"}, "spec": spec})
    doc["metadata"].update(uid="u-1", creationTimestamp="2020-01-01T00:00:00Z")
    assert store.commit(puts=[Resource(kind, doc)])


def plant_pool(store, name: str = "a", cidr: str = "198.18.0.0/24") -> None:
    kind, doc = kinds.decode({"apiVersion": API, "kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr}})
    doc["metadata"].update(uid="u-2", creationTimestamp="2020-01-01T00:00:00Z")
    assert store.commit(puts=[Resource(kind, doc)])


def fields(r: Run) -> dict[str, str]:
    """`Name: value` lines of the output."""
    out = {}
    for line in r.lines:
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


# -- version ---------------------------------------------------------------------------------------


def test_version_without_cluster_information(ctl, store):
    shown = fields(ok(ctl("version")))
    assert list(shown) == ["Client Version", "Cluster Version", "Cluster Type"]
    assert shown["Client Version"] and "v3.30" in shown["Client Version"]
    assert shown["Cluster Version"].startswith("unknown") and "ClusterInformation" in shown["Cluster Version"]
    assert shown["Cluster Type"].startswith("unknown")


def test_version_with_cluster_information(ctl, store):
    plant_cluster_information(store, clusterGUID="abc123", calicoVersion="v3.30.0", clusterType="typha,kdd,k8s,operator,bgp", datastoreReady=True)
    shown = fields(ok(ctl("version")))
    assert shown["Cluster Version"] == "v3.30.0"
    assert shown["Cluster Type"] == "typha,kdd,k8s,operator,bgp"


def test_version_with_cluster_information_lacking_the_version(ctl, store):
    plant_cluster_information(store, clusterGUID="abc123", clusterType="k8s,bgp")
    shown = fields(ok(ctl("version")))
    assert shown["Cluster Version"].startswith("unknown") and shown["Cluster Type"] == "k8s,bgp"


def test_version_of_the_installed_command(store, etcd_endpoint):
    env = {"ETCD_ENDPOINTS": etcd_endpoint}
    before = fields(ok(run_exe("version", env=env)))
    assert before["Client Version"] and before["Cluster Version"].startswith("unknown")
    plant_cluster_information(store, clusterGUID="abc123", calicoVersion="v3.30.0", clusterType="k8s,bgp")
    after = fields(ok(run_exe("version", env=env)))
    assert after["Client Version"] == before["Client Version"]
    assert (after["Cluster Version"], after["Cluster Type"]) == ("v3.30.0", "k8s,bgp")


# -- /etc/calico/calicoctl.cfg ------------------------------------------------------------------------


@pytest.fixture
def default_config(monkeypatch, tmp_path):
    """`write(endpoints)`: a CalicoAPIConfig where calicoctl looks without --config."""
    path = tmp_path / "etc-calico" / "calicoctl.cfg"
    path.parent.mkdir()
    monkeypatch.setattr(context, "DEFAULT_CONFIG", str(path))

    def write(endpoints: str) -> str:
        doc = {"apiVersion": API, "kind": "CalicoAPIConfig", "metadata": {}, "spec": {"datastoreType": "etcdv3", "etcdEndpoints": endpoints}}
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    return write


def test_the_default_config_file_is_read(ctl, store, etcd_endpoint, default_config):
    # The test etcd is not at Calico's default endpoint, so only the file can lead there.
    assert etcd_endpoint != context.DEFAULT_ENDPOINT
    plant_pool(store)
    default_config(etcd_endpoint)
    lines = ok(ctl("get", "ippools", endpoint=False, env=NO_ENV)).lines
    assert [line.split()[0] for line in lines] == ["NAME", "a"]
    plant_cluster_information(store, clusterGUID="abc123", calicoVersion="v3.30.0", clusterType="k8s,bgp")
    assert fields(ok(ctl("version", endpoint=False, env=NO_ENV)))["Cluster Version"] == "v3.30.0"


def test_a_default_config_file_naming_no_reachable_etcd_fails(ctl, store, default_config):
    default_config(UNREACHABLE)
    r = ctl("get", "ippools", "--etcd-timeout", "1", endpoint=False, env=NO_ENV)
    assert r.rc != 0 and "Traceback" not in r.stderr and "127.0.0.1:1" in r.stderr, (r.rc, r.stderr)


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_endpoint_flag_wins_over_the_default_config_file(ctl, store, etcd_endpoint, default_config, where):
    plant_pool(store)
    default_config(UNREACHABLE)
    flag = ["--etcd-endpoints", etcd_endpoint]
    args = [*flag, "get", "ippools"] if where == "before" else ["get", "ippools", *flag]
    lines = ok(ctl(*args, endpoint=False, env=NO_ENV)).lines
    assert [line.split()[0] for line in lines] == ["NAME", "a"]


def test_a_config_flag_wins_over_the_default_config_file(ctl, store, etcd_endpoint, default_config, tmp_path):
    plant_pool(store)
    default_config(UNREACHABLE)
    other = tmp_path / "other.cfg"
    other.write_text(yaml.safe_dump({"apiVersion": API, "kind": "CalicoAPIConfig", "spec": {"etcdEndpoints": etcd_endpoint}}))
    lines = ok(ctl("get", "ippools", "-c", str(other), endpoint=False, env=NO_ENV)).lines
    assert [line.split()[0] for line in lines] == ["NAME", "a"]


def test_a_bad_default_config_file_is_a_one_line_error_naming_it(ctl, default_config):
    path = default_config(UNREACHABLE)
    with open(path, "w") as f:
        f.write(yaml.safe_dump({"apiVersion": API, "kind": "Something", "spec": {}}))
    r = ctl("get", "ippools", endpoint=False, env=NO_ENV)
    assert r.rc == 1 and path in r.stderr and "\n" not in r.stderr.strip() and "Traceback" not in r.stderr, (r.rc, r.stderr)
