"""calicoctl as a command against etcd: connection options, the installed executable, and errors as
one line with a non-zero exit (never a traceback). Its verbs, their help and how the connection
settings are read are tested without etcd in tests/unit/test_calicoctl_cli.py."""

from __future__ import annotations

import json

import pytest

from tests.calicoctl_support import allocate, run_exe
from tests.conftest import FABRIC_ADDRESS
from tests.pools import create_pool

DEAD = f"http://{FABRIC_ADDRESS}:1"  # nothing listens there


def _one_line_error(run, *fragments: str) -> None:
    assert run.rc != 0
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("Error: "), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    for fragment in fragments:
        assert fragment in run.stderr


def test_installed_executable_end_to_end(etcd_endpoint, store):
    env = {"ETCD_ENDPOINTS": etcd_endpoint}
    assert "Usage: calicoctl" in run_exe("--help").stdout
    assert run_exe("--version").stdout.startswith("calicoctl, version ")
    r = run_exe("ippool", "create", "pool1", "--cidr", "198.18.0.0/24", "--block-size", "28", env=env)
    assert r.rc == 0 and "Created IP pool pool1" in r.stdout, r.stderr
    allocate(store, "net1.c1")
    r = run_exe("ipam", "show", "-o", "json", env=env)
    assert r.rc == 0 and r.json()["pools"][0]["inUse"] == 1
    r = run_exe("ipam", "check", "--grace", "0", env=env)
    assert r.rc == 3 and r.stdout.splitlines()[-1] == "Check complete; found 1 problems."
    r = run_exe("ippool", "create", "pool2", "--cidr", "198.18.0.0/25", env=env)
    _one_line_error(r, "IPPool(pool2) CIDR 198.18.0.0/25 overlaps with IPPool(pool1) CIDR 198.18.0.0/24")
    assert r.rc == 1


@pytest.mark.parametrize(
    "args",
    [["get", "ippools"], ["ipam", "show"], ["ipam", "check"], ["get", "nodes"], ["get", "wep"], ["ipam", "configure", "--ip-cooldown-seconds", "1"]],
)
def test_unreachable_etcd_is_one_line_naming_the_endpoints(args, etcd):
    r = run_exe("--etcd-endpoints", f"{DEAD},http://{FABRIC_ADDRESS}:2", "--etcd-timeout", "0.5", *args)
    _one_line_error(r, "etcd is unreachable at", DEAD, f"http://{FABRIC_ADDRESS}:2")
    assert r.rc == 1 and r.stdout == ""


def test_default_endpoint_is_localhost(etcd):
    r = run_exe("get", "ippools", "--etcd-timeout", "0.5")  # nothing listens on 127.0.0.1 in the test namespace
    _one_line_error(r, "etcd is unreachable at http://127.0.0.1:2379")


def test_environment_flags_and_config_file(ctl, store, etcd_endpoint, tmp_path):
    create_pool(store, "p", "198.18.0.0/24")
    conflist = tmp_path / "10-calico.conflist"
    conflist.write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "k8s-pod-network",
        "plugins": [{"type": "calico", "etcd_endpoints": etcd_endpoint, "ipam": {"type": "calico-ipam"}}, {"type": "portmap"}],
    }))
    conf = tmp_path / "10-calico.conf"
    conf.write_text(json.dumps({"cniVersion": "0.3.1", "name": "n", "type": "calico-ipam", "etcd_endpoints": etcd_endpoint}))
    for args in (["--config", str(conflist), "get", "ippools"], ["get", "ippools", "--config", str(conf)]):
        r = ctl(*args, "-o", "json", endpoint=False, env={"ETCD_ENDPOINTS": DEAD})
        assert r.rc == 0 and [d["metadata"]["name"] for d in r.json()["items"]] == ["p"], r.stderr
    # The environment, when nothing else is given.
    r = ctl("get", "ippools", "-o", "json", endpoint=False, env={"ETCD_ENDPOINTS": etcd_endpoint})
    assert r.rc == 0 and len(r.json()["items"]) == 1
    # A flag wins over the config file, and a flag after the verb over one before it.
    r = ctl("--config", str(conflist), "get", "ippools", "--etcd-endpoints", DEAD, "--etcd-timeout", "0.5", endpoint=False)
    _one_line_error(r, DEAD)
    r = ctl("--etcd-endpoints", DEAD, "get", "ippools", "--etcd-endpoints", etcd_endpoint, endpoint=False)
    assert r.rc == 0 and "198.18.0.0/24" in r.stdout


def test_connection_errors(ctl, tmp_path, etcd):
    _one_line_error(ctl("--etcd-endpoints", "localhost:2379", "get", "ippools", endpoint=False), "etcd endpoint 'localhost:2379' is invalid")
    missing = ctl("--etcd-endpoints", f"https://{FABRIC_ADDRESS}:2379", "--etcd-ca-cert-file", str(tmp_path / "ca.pem"), "get", "ippools", endpoint=False)
    _one_line_error(missing, "cannot read", "ca.pem")
    _one_line_error(ctl("--config", str(tmp_path / "none.conflist"), "get", "ippools", endpoint=False), "cannot read", "none.conflist")
    bad = tmp_path / "bad.conflist"
    bad.write_text("{nope")
    _one_line_error(ctl("--config", str(bad), "get", "ippools", endpoint=False), "is neither JSON nor YAML")
    bad.write_text(json.dumps({"plugins": [{"type": "bridge"}]}))
    _one_line_error(ctl("--config", str(bad), "get", "ippools", endpoint=False), "has no calico or calico-ipam plugin")
    bad.write_text(json.dumps({"type": "calico", "datastore_type": "kubernetes"}))
    _one_line_error(ctl("--config", str(bad), "get", "ippools", endpoint=False), "datastore_type 'kubernetes' is not supported")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["ippool", "create", "p"], "Missing option '--cidr'"),
        (["ippool", "frobnicate"], "No such command 'frobnicate'"),
        (["get", "ippools", "-o", "xml"], "unrecognized output format 'xml'"),
        (["ipam", "show", "--bogus"], "No such option '--bogus'"),
        (["label", "nodes"], "Missing argument 'NAME'"),
    ],
)
def test_usage_errors_are_one_line(ctl, args, fragment):
    r = ctl(*args)
    _one_line_error(r, fragment, "--help")
    assert r.rc == 2


def test_unexpected_failures_are_one_line(ctl, monkeypatch):
    from calico_cni.datastore import resources as stored

    def boom(store, kind, namespace=None):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(stored, "list_kind", boom)
    r = ctl("get", "ippools")
    _one_line_error(r, "RuntimeError: disk on fire second line")
    assert r.rc == 1


def test_corrupt_records_are_reported_not_fatal(ctl, store):
    create_pool(store, "good", "198.18.0.0/24")
    assert store.client.commit([], [("/calico/resources/v3/projectcalico.org/ippools/broken", b"{oops")])[0]
    r = ctl("get", "ippools", "-o", "json")
    assert r.rc == 0 and [d["metadata"]["name"] for d in r.json()["items"]] == ["good"]
    assert "calicoctl: error: skipping IPPool broken: the record at /calico/resources/v3/projectcalico.org/ippools/broken cannot be read" in r.stderr


def test_a_failed_journal_replay_is_a_warning_not_the_commands_failure(ctl, store, tmp_path, monkeypatch):
    """calicoctl finishes the node's pending releases after its own work; if that fails, the
    command still succeeds, says so in one warning line, and the entry stays for next time."""
    from calico_cni.journal import Journal
    from calico_ipam import replay

    journal = Journal(str(tmp_path / "journal"))
    entry = journal.add_pending("net1", "c1", "eth0", "net1.c1", [], None)

    def boom(store, journal):
        raise RuntimeError("boom")

    monkeypatch.setattr(replay, "replay", boom)
    r = ctl("get", "ippools", "-o", "json", env={"CALICO_RELEASE_JOURNAL_DIR": journal.root})
    assert r.rc == 0 and r.json()["items"] == []
    assert r.stderr == "calicoctl: warning: pending releases not replayed yet: boom\n"
    assert journal.pending() == [entry]
