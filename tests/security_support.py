"""Helpers shared by the security and fuzz tests: etcd snapshots, the checks every refused
request must pass (CNI error JSON with the right code, non-zero exit, no traceback, no secret),
and the secured etcd servers (TLS with client certificates, user/password auth) as fixtures."""

from __future__ import annotations

import json
import subprocess

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.store import Datastore
from tests import etcd_secure, tls_certs
from tests.conftest import FABRIC_ADDRESS


def snapshot(client: EtcdClient) -> dict[str, tuple[bytes, int]]:
    """Every key in etcd with its value and mod revision."""
    return {kv.key: (kv.value, kv.mod_revision) for kv in client.get_prefix("/")}


def one_json_object(stdout: str) -> dict:
    """stdout must hold exactly one JSON object and nothing else."""
    obj, end = json.JSONDecoder().raw_decode(stdout.strip())
    assert stdout.strip()[end:] == "", f"more than one JSON value on stdout: {stdout!r}"
    assert isinstance(obj, dict), stdout
    return obj


def cni_error(run, code: int | None = None, secrets: tuple[str, ...] = ()) -> dict:
    """Assert that an exec'd plugin refused the request properly and return the error object."""
    assert run.rc != 0, f"expected a failure, got exit 0: {run.stdout!r}"
    obj = one_json_object(run.stdout)
    assert set(obj) <= {"cniVersion", "code", "msg", "details"} and {"cniVersion", "code", "msg"} <= set(obj), obj
    assert isinstance(obj["code"], int) and isinstance(obj["msg"], str) and obj["msg"], obj
    for stream in (run.stdout, run.stderr):
        assert "Traceback" not in stream, stream
    for secret in secrets:
        assert secret not in run.stdout and secret not in run.stderr, f"secret leaked: {run.stdout} {run.stderr}"
    if code is not None:
        assert obj["code"] == code, obj
    return obj


def succeeded(run) -> dict | None:
    assert run.rc == 0, f"exit {run.rc}: {run.stdout} {run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr
    return run.out


# -- secured etcd servers (fixtures, registered in tests/conftest.py) ------------------------------

TLS_PORT = 23790
AUTH_PORT = 23792
PASSWORD = "pw-9f3b1c7e-never-print-me"
ROOT_PASSWORD = "root-pw-5d1e0a"
TOKEN_TTL = 1  # seconds a simple token lives without use (etcd --auth-token-ttl)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a server certificate for the fabric address and loopback, a client certificate,
    an expired client certificate, and a second CA with its own client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca = tls_certs.authority(d / "ca")
    server = ca.issue("server", "etcd", ips=(FABRIC_ADDRESS, "127.0.0.1"), server=True)
    client = ca.issue("client", "calico")
    expired = ca.issue("expired", "calico", days=0)
    rogue_ca = tls_certs.authority(d / "rogue", "rogue-ca")
    rogue = rogue_ca.issue("rogue", "calico")
    encrypted_key = d / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", client[1], "-aes256", "-passout", "pass:x", "-out", str(encrypted_key)],
                   check=True, capture_output=True, timeout=30)
    return {
        "ca": ca.cert, "server": server, "client": client, "expired": expired,
        "rogue_ca": rogue_ca.cert, "rogue": rogue, "encrypted_key": str(encrypted_key), "dir": d,
    }


@pytest.fixture(scope="module")
def tls_etcd(fabric, pki, tmp_path_factory):
    """etcd serving https on the fabric address and requiring a client certificate signed by our CA."""
    cert, key = pki["client"]
    cluster = etcd_secure.start_single(
        FABRIC_ADDRESS, TLS_PORT, TLS_PORT + 1, str(tmp_path_factory.mktemp("etcd-tls")),
        tls={"ca": pki["ca"], "cert": pki["server"][0], "key": pki["server"][1]},
        ctl_args=[f"--cacert={pki['ca']}", f"--cert={cert}", f"--key={key}"],
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def tls_store(tls_etcd, pki):
    """A datastore on the TLS etcd with valid credentials, emptied before the test."""
    cert, key = pki["client"]
    ds = Datastore(EtcdClient(EtcdSettings((tls_etcd.endpoint,), pki["ca"], cert, key)))
    for kv in ds.client.get_prefix("/", keys_only=True):
        ds.client.commit([], deletes=[kv.key])
    yield ds
    ds.close()


@pytest.fixture(scope="module")
def auth_etcd(fabric, tmp_path_factory):
    """etcd with authentication on: root, and user `calico` whose role may read and write /calico/
    only; simple tokens expire after TOKEN_TTL seconds unused. User `nobody` has no role."""
    cluster = etcd_secure.start_single(
        FABRIC_ADDRESS, AUTH_PORT, AUTH_PORT + 1, str(tmp_path_factory.mktemp("etcd-auth")),
        extra=["--auth-token", "simple", "--auth-token-ttl", str(TOKEN_TTL)],
    )
    try:
        cluster.etcdctl("user", "add", "nobody:nobody-pw")
        etcd_secure.enable_auth(cluster, ROOT_PASSWORD, "calico", PASSWORD)
        cluster.ctl_args = [f"--user=root:{ROOT_PASSWORD}"]
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def auth_store(auth_etcd):
    ds = Datastore(EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD)))
    for kv in ds.client.get_prefix("/calico/", keys_only=True):
        ds.client.commit([], deletes=[kv.key])
    yield ds
    ds.close()

