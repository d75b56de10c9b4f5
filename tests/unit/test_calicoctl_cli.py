"""calicoctl's command line without etcd: every verb is there and has help, and the connection
settings are read from flags, a CNI config file or the environment (http://127.0.0.1:2379 when none
gives an endpoint)."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from calico_cni.ctl.context import Connection, load_config
from calico_cni.ctl.errors import CtlError
from calico_cni.ctl.main import cli


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,)
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))


VERBS = list(_commands(cli))


def test_every_verb_is_covered():
    assert set(VERBS) == {
        ("create",), ("apply",), ("replace",), ("delete",), ("get",), ("patch",), ("label",), ("version",),
        ("ipam",), ("ipam", "check"), ("ipam", "configure"), ("ipam", "gc"), ("ipam", "release"), ("ipam", "show"),
        ("ippool",), ("ippool", "create"), ("ippool", "delete"), ("ippool", "disable"), ("ippool", "enable"),
        ("datastore",), ("datastore", "migrate"), ("datastore", "migrate", "lock"), ("datastore", "migrate", "unlock"),
        ("datastore", "repair"), ("datastore", "repair", "profiles"),
        ("node",), ("node", "policy"), ("node", "status"),
    }


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_of_every_verb(verb):
    r = CliRunner().invoke(cli, [*verb, "--help"])
    assert r.exit_code == 0 and "Usage: calicoctl " + " ".join(verb) in r.stdout


def test_tls_flags_reach_the_connection_settings(tmp_path):
    conn = Connection(flags={"etcd_endpoints": "https://a:2379,https://b:2379", "etcd_ca_cert_file": "/ca", "etcd_cert_file": "/crt", "etcd_key_file": "/key", "etcd_timeout": 2.5})
    s = conn.settings({})
    assert (s.endpoints, s.ca_cert_file, s.cert_file, s.key_file, s.timeout) == (("https://a:2379", "https://b:2379"), "/ca", "/crt", "/key", 2.5)
    env = {"ETCD_ENDPOINTS": "https://e:2379", "ETCD_CA_CERT_FILE": "/eca", "ETCD_CERT_FILE": "/ecrt", "ETCD_KEY_FILE": "/ekey"}
    s = Connection().settings(env)
    assert (s.endpoints, s.ca_cert_file, s.cert_file, s.key_file) == (("https://e:2379",), "/eca", "/ecrt", "/ekey")
    conf = tmp_path / "c.conf"
    conf.write_text(json.dumps({"type": "calico", "etcd_endpoints": "https://c:2379", "etcd_ca_cert_file": "/cca", "etcd_key_file": "/ckey", "etcd_cert_file": "/ccrt", "mtu": 1400}))
    s = Connection(config_file=str(conf)).settings(env)
    assert (s.endpoints, s.ca_cert_file, s.cert_file, s.key_file) == (("https://c:2379",), "/cca", "/ccrt", "/ckey")
    assert Connection().settings({}).endpoints == ("http://127.0.0.1:2379",)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("etcdv3", "spec of a CalicoAPIConfig must be an object"),
        ({"etcdEndpoints": "http://127.0.0.1:2379", "etcdCACert": "-----BEGIN CERTIFICATE-----", "etcdKey": "k"},
         "inline certificates (etcdKey, etcdCACert) are not supported"),
        ({"etcdEndpoints": "http://127.0.0.1:2379", "etcdEndpoint": "x", "zz": 1}, "unknown field spec.etcdEndpoint of a CalicoAPIConfig"),
        ({"datastoreType": "kubernetes"}, "datastoreType kubernetes is not supported"),
    ],
    ids=["spec-not-an-object", "inline-certificates", "unknown-field", "kubernetes"],
)
def test_a_calicoctl_cfg_this_calicoctl_cannot_use_is_refused(tmp_path, spec, message):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "CalicoAPIConfig", "metadata": {}, "spec": spec}))
    with pytest.raises(CtlError) as raised:
        load_config(str(cfg))
    assert str(raised.value).startswith(f"{cfg}: ") and message in str(raised.value)


def test_a_config_file_that_is_not_an_object_is_refused(tmp_path):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text("- a\n- b\n")
    with pytest.raises(CtlError, match="is neither a calicoctl.cfg .kind: CalicoAPIConfig. nor a CNI network configuration"):
        load_config(str(cfg))
