"""calico-ipam against etcd secured the two ways Calico supports: TLS with client certificates
(`--client-cert-auth`) and user/password authentication, each on a real etcd started by the test.

A refused certificate or password is CNI error 7 (the configuration must change; "try again later",
11, would make the runtime retry forever), names the setting and the file, never the password, and
changes nothing in etcd. A long-lived client (the agent keeps one for days) authenticates again
when its token expires or etcd restarts, instead of failing every request from then on.
"""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.store import Datastore
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest
from tests import etcd_secure
from tests.conftest import cni_env, run_plugin
from tests.pools import create_pool
from tests.security_support import AUTH_PORT, PASSWORD, ROOT_PASSWORD, TOKEN_TTL, cni_error, snapshot, succeeded

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)



def root_snapshot(cluster) -> list:
    """Every key, value and mod revision in etcd, read as root (sees outside /calico/ too)."""
    out = json.loads(cluster.etcdctl("get", "", "--prefix", "-w", "json").stdout)
    return sorted((kv["key"], kv["value"], kv["mod_revision"]) for kv in out.get("kvs", []))


def conf(tmp_path, endpoint: str, **extra) -> dict:
    out = {
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "calico-ipam",
        "etcd_endpoints": endpoint,
        "etcd_timeout": 3,
        "nodename": "node1",
        "log_file_path": str(tmp_path / "log" / "cni.log"),
        "log_level": "debug",
        "ipam": {"type": "calico-ipam"},
    }
    out.update(extra)
    return out


def add(config, cid="c1", **env):
    return run_plugin("calico-ipam", "ADD", config, cni_env(cid, **env), timeout=60)


def delete(config, cid="c1", **env):
    return run_plugin("calico-ipam", "DEL", config, cni_env(cid, **env), timeout=60)


# -- TLS -----------------------------------------------------------------------------------------


def test_tls_add_and_del_with_client_certificate(tls_store, tls_etcd, pki, tmp_path):
    create_pool(tls_store, "p1", "198.18.0.0/24")
    cert, key = pki["client"]
    config = conf(tmp_path, tls_etcd.endpoint, etcd_ca_cert_file=pki["ca"], etcd_cert_file=cert, etcd_key_file=key)
    out = succeeded(add(config))
    assert out["ips"][0]["address"].startswith("198.18.0.")
    assert tls_store.handle("net1.c1") is not None
    succeeded(delete(config))
    assert tls_store.handle("net1.c1") is None


def test_tls_files_from_environment(tls_store, tls_etcd, pki, tmp_path):
    """ETCD_ENDPOINTS and ETCD_*_FILE when the config has no etcd keys (as Calico)."""
    create_pool(tls_store, "p1", "198.18.0.0/24")
    cert, key = pki["client"]
    config = conf(tmp_path, tls_etcd.endpoint)
    del config["etcd_endpoints"]
    env = {"ETCD_ENDPOINTS": tls_etcd.endpoint, "ETCD_CA_CERT_FILE": pki["ca"], "ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key}
    succeeded(add(config, **env))
    succeeded(delete(config, **env))
    assert tls_store.handle("net1.c1") is None


def _refused(tls_store, tls_etcd, tmp_path, code, **keys):
    """ADD and DEL with these TLS keys are refused with `code`; etcd is unchanged."""
    create_pool(tls_store, "p1", "198.18.0.0/24")
    before = snapshot(tls_store.client)
    config = conf(tmp_path, tls_etcd.endpoint, **keys)
    err = cni_error(add(config), code)
    assert cni_error(delete(config), code)["msg"] == err["msg"]
    assert snapshot(tls_store.client) == before
    return err


def test_tls_without_client_certificate_is_refused(tls_store, tls_etcd, pki, tmp_path):
    err = _refused(tls_store, tls_etcd, tmp_path, 7, etcd_ca_cert_file=pki["ca"])
    assert "requires a client certificate and none is configured" in err["msg"], err
    assert "etcd_cert_file" in err["details"] and "etcd_key_file" in err["details"]


def test_tls_certificate_of_another_ca_is_refused(tls_store, tls_etcd, pki, tmp_path):
    cert, key = pki["rogue"]
    err = _refused(tls_store, tls_etcd, tmp_path, 7, etcd_ca_cert_file=pki["ca"], etcd_cert_file=cert, etcd_key_file=key)
    assert f"rejected the client certificate {cert}" in err["msg"], err
    assert tls_etcd.endpoint in err["msg"]


def test_tls_expired_certificate_is_refused_and_named(tls_store, tls_etcd, pki, tmp_path):
    cert, key = pki["expired"]
    err = _refused(tls_store, tls_etcd, tmp_path, 7, etcd_ca_cert_file=pki["ca"], etcd_cert_file=cert, etcd_key_file=key)
    assert cert in err["msg"] and "expired" in err["msg"], err


def test_tls_server_not_trusted_by_configured_ca(tls_store, tls_etcd, pki, tmp_path):
    cert, key = pki["client"]
    err = _refused(tls_store, tls_etcd, tmp_path, 7, etcd_ca_cert_file=pki["rogue_ca"], etcd_cert_file=cert, etcd_key_file=key)
    assert "is not trusted" in err["msg"], err
    assert pki["rogue_ca"] in err["details"]


@pytest.mark.parametrize("case", ["missing-ca", "missing-cert", "ca-not-pem", "cert-not-pem", "key-of-other-cert",
                                  "encrypted-key", "cert-without-key", "key-without-cert", "ca-is-directory",
                                  "key-is-fifo"])
def test_tls_unusable_files_are_named(tls_store, tls_etcd, pki, tmp_path, case):
    cert, key = pki["client"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    keys = {"etcd_ca_cert_file": pki["ca"], "etcd_cert_file": cert, "etcd_key_file": key}
    culprit = {
        "missing-ca": ("etcd_ca_cert_file", "/nonexistent/ca.crt"),
        "missing-cert": ("etcd_cert_file", "/nonexistent/client.crt"),
        "ca-not-pem": ("etcd_ca_cert_file", str(garbage)),
        "cert-not-pem": ("etcd_cert_file", str(garbage)),
        "key-of-other-cert": ("etcd_key_file", pki["rogue"][1]),
        "encrypted-key": ("etcd_key_file", pki["encrypted_key"]),
        "cert-without-key": ("etcd_key_file", None),
        "key-without-cert": ("etcd_cert_file", None),
        "ca-is-directory": ("etcd_ca_cert_file", str(tmp_path)),
        "key-is-fifo": ("etcd_key_file", str(fifo)),
    }[case]
    keys[culprit[0]] = culprit[1]
    keys = {k: v for k, v in keys.items() if v is not None}
    err = _refused(tls_store, tls_etcd, tmp_path, 7, **keys)
    text = err["msg"] + " " + err.get("details", "")
    assert culprit[1] is None or culprit[1] in text, err
    if culprit[1] is None:
        assert "etcd_cert_file" in text and "etcd_key_file" in text, err
    if case == "encrypted-key":
        assert "passphrase" in text
    if case == "key-of-other-cert":
        assert "does not belong" in text


def test_key_readable_by_others_works_with_a_warning(tls_store, tls_etcd, pki, tmp_path):
    create_pool(tls_store, "p1", "198.18.0.0/24")
    cert, key = pki["client"]
    loose = tmp_path / "loose.key"
    loose.write_bytes(open(key, "rb").read())
    loose.chmod(0o644)
    config = conf(tmp_path, tls_etcd.endpoint, etcd_ca_cert_file=pki["ca"], etcd_cert_file=cert, etcd_key_file=str(loose))
    run = add(config)
    succeeded(run)
    assert f"etcd_key_file {loose} can be read by other users (mode 644)" in run.stderr
    succeeded(delete(config))


def test_plain_http_against_tls_etcd_is_try_again_with_a_hint(tls_store, tls_etcd, tmp_path):
    endpoint = tls_etcd.endpoint.replace("https://", "http://")
    config = conf(tmp_path, endpoint, etcd_timeout=1)
    before = snapshot(tls_store.client)
    err = cni_error(add(config), 11)
    assert "https://" in err["details"], err
    assert snapshot(tls_store.client) == before


def test_https_against_plain_etcd_says_it_does_not_speak_tls(etcd, pki, tmp_path):
    endpoint = etcd.endpoint.replace("http://", "https://")
    cert, key = pki["client"]
    err = cni_error(add(conf(tmp_path, endpoint, etcd_ca_cert_file=pki["ca"], etcd_cert_file=cert, etcd_key_file=key)), 7)
    assert "does not speak TLS" in err["msg"], err


# -- user and password ---------------------------------------------------------------------------


def test_auth_add_and_del_with_config_keys(auth_store, auth_etcd, tmp_path):
    create_pool(auth_store, "p1", "198.18.0.0/24")
    config = conf(tmp_path, auth_etcd.endpoint, etcd_username="calico", etcd_password=PASSWORD)
    run = add(config)
    succeeded(run)
    assert auth_store.handle("net1.c1") is not None
    succeeded(delete(config))
    assert auth_store.handle("net1.c1") is None
    log = (tmp_path / "log" / "cni.log").read_text()
    assert "authenticated to etcd as calico" in log  # debug level was on
    assert PASSWORD not in log and PASSWORD not in run.stdout + run.stderr


def test_auth_from_environment(auth_store, auth_etcd, tmp_path):
    create_pool(auth_store, "p1", "198.18.0.0/24")
    config = conf(tmp_path, auth_etcd.endpoint)
    env = {"ETCD_USERNAME": "calico", "ETCD_PASSWORD": PASSWORD}
    succeeded(add(config, **env))
    succeeded(delete(config, **env))
    assert auth_store.handle("net1.c1") is None


@pytest.mark.parametrize("where", ["config", "environment"])
def test_auth_wrong_password_is_refused_without_echo(auth_store, auth_etcd, tmp_path, where):
    create_pool(auth_store, "p1", "198.18.0.0/24")
    wrong = "wrong-" + PASSWORD
    config = conf(tmp_path, auth_etcd.endpoint)
    env = {}
    if where == "config":
        config.update(etcd_username="calico", etcd_password=wrong)
    else:
        env = {"ETCD_USERNAME": "calico", "ETCD_PASSWORD": wrong}
    before = root_snapshot(auth_etcd)
    for run in (add(config, **env), delete(config, **env)):
        err = cni_error(run, 7, secrets=(wrong, PASSWORD))
        assert "etcd refused the user name or password of etcd user 'calico'" in err["msg"], err
        assert "etcd_password" in err["details"]
    assert root_snapshot(auth_etcd) == before
    log = (tmp_path / "log" / "cni.log").read_text()
    assert "refused the user name or password" in log
    assert wrong not in log and PASSWORD not in log


def test_auth_required_but_not_configured(auth_store, auth_etcd, tmp_path):
    err = cni_error(add(conf(tmp_path, auth_etcd.endpoint)), 7)
    assert "requires authentication" in err["msg"] and "etcd_username" in err["details"], err


def test_auth_user_without_role_is_denied(auth_store, auth_etcd, tmp_path):
    create_pool(auth_store, "p1", "198.18.0.0/24")
    before = root_snapshot(auth_etcd)
    err = cni_error(add(conf(tmp_path, auth_etcd.endpoint, etcd_username="nobody", etcd_password="nobody-pw")), 5)
    assert "permission denied for etcd user 'nobody'" in err["msg"], err
    assert "nobody-pw" not in err["msg"] + err.get("details", "")
    assert root_snapshot(auth_etcd) == before


def test_auth_password_without_user_is_a_config_error(auth_etcd, tmp_path):
    err = cni_error(add(conf(tmp_path, auth_etcd.endpoint, etcd_password=PASSWORD)), 7, secrets=(PASSWORD,))
    assert "no user name" in err["msg"]


def test_credentials_in_endpoint_url_are_refused_without_echo(auth_etcd, tmp_path):
    endpoint = auth_etcd.endpoint.replace("http://", f"http://calico:{PASSWORD}@")
    err = cni_error(add(conf(tmp_path, endpoint)), 7, secrets=(PASSWORD,))
    assert "credentials in its URL" in err["msg"]
    assert PASSWORD not in (tmp_path / "log" / "cni.log").read_text()


@pytest.mark.parametrize("value", [12345, ["a"], {"p": "q"}, True, 1.5])
def test_password_of_wrong_type_is_not_echoed(auth_etcd, tmp_path, value):
    err = cni_error(add(conf(tmp_path, auth_etcd.endpoint, etcd_username="calico", etcd_password=value)), 7)
    text = err["msg"] + err.get("details", "")
    assert "etcd_password must be a string" in err["msg"]
    assert repr(value) not in text and str(value) not in text.replace("etcd_password", ""), err


@pytest.mark.parametrize("transport", ["gateway", "grpc"])
def test_expired_token_is_renewed_by_a_long_lived_client(auth_store, auth_etcd, transport):
    """One EtcdClient, used across token expiry and an etcd restart, keeps working: it gets a new
    token instead of failing (a simple token expires, and vanishes when etcd restarts). Over gRPC
    as calico-node and the agent use it, and over the JSON gateway as calicoctl does."""
    create_pool(auth_store, "p1", "198.18.0.0/24")
    client = EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD, timeout=5))
    if transport == "grpc":
        client.lease().close()  # a long-lived client's channel: gRPC from now on
    assert client.uses_gateway == (transport == "gateway")
    store = Datastore(client)
    try:
        first = allocator.assign(store, Attachment("net1.long", "node1", "eth0"), [FamilyRequest(4)])
        assert client.authentications == 1
        time.sleep(TOKEN_TTL * 3)  # the simple token expires unused
        second = allocator.assign(store, Attachment("net1.long2", "node1", "eth0"), [FamilyRequest(4)])
        assert client.authentications == 2, "the client did not authenticate again after its token expired"
        assert first[0].address != second[0].address
        member = auth_etcd.members[0]
        member.stop()
        member.start()
        auth_etcd.wait_healthy()
        time.sleep(TOKEN_TTL * 3)
        assert allocator.release(store, "net1.long", "eth0")
        assert allocator.release(store, "net1.long2", "eth0")
        assert client.authentications == 3
        assert store.handle("net1.long") is None
        assert client.uses_gateway == (transport == "gateway")
    finally:
        store.close()


@pytest.mark.parametrize("transport", ["gateway", "grpc"])
def test_auth_enabled_after_the_client_started(fabric, tmp_path, transport):
    """A client that found authentication off (no token) authenticates once etcd turns it on."""
    cluster = etcd_secure.start_single("127.0.0.1", AUTH_PORT + 20, AUTH_PORT + 21, str(tmp_path))
    try:
        client = EtcdClient(EtcdSettings((cluster.endpoint,), username="calico", password=PASSWORD))
        if transport == "grpc":
            client.lease().close()
        try:
            assert client.get("/calico/x") is None
            assert client.authentications == 0
            etcd_secure.enable_auth(cluster, ROOT_PASSWORD, "calico", PASSWORD)
            assert client.commit([], [("/calico/x", b"1")])[0]
            assert client.authentications == 1
        finally:
            client.close()
    finally:
        cluster.stop()


# -- files ---------------------------------------------------------------------------------------


def test_log_file_and_directory_keep_other_users_out(etcd_endpoint, tmp_path):
    old = os.umask(0o022)
    try:
        config = conf(tmp_path, etcd_endpoint)
        config["log_file_path"] = str(tmp_path / "new" / "dir" / "cni.log")
        run_plugin("calico-ipam", "DEL", config, cni_env(), timeout=60)
    finally:
        os.umask(old)
    path = tmp_path / "new" / "dir" / "cni.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text()


def test_log_file_path_that_is_a_fifo_does_not_hang(etcd_endpoint, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = conf(tmp_path, etcd_endpoint)
    config["log_file_path"] = str(fifo)
    run = run_plugin("calico-ipam", "DEL", config, cni_env(), timeout=30)
    succeeded(run)
    assert "cannot open log file" in run.stderr
