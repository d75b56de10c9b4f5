"""calicoctl over etcd TLS with client certificates and with user/password authentication, as an
installed command against real etcd servers (issue 8: "and the same for calicoctl")."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import BIN_DIR
from tests.security_support import PASSWORD

CALICOCTL = str(BIN_DIR / "calicoctl")


def calicoctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run([CALICOCTL, *args], capture_output=True, text=True, env=full, timeout=60)


def test_calicoctl_over_tls_with_a_client_certificate(tls_etcd, pki):
    cert, key = pki["client"]
    tls = ["--etcd-endpoints", tls_etcd.endpoint, "--etcd-ca-cert-file", pki["ca"], "--etcd-cert-file", cert, "--etcd-key-file", key]
    made = calicoctl(*tls, "ippool", "create", "tls-pool", "--cidr", "198.18.40.0/24")
    assert made.returncode == 0, made.stderr
    listed = calicoctl(*tls, "get", "ippools", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "198.18.40.0/24" in listed.stdout
    # The same through the ETCD_* environment variables.
    env = {"ETCD_ENDPOINTS": tls_etcd.endpoint, "ETCD_CA_CERT_FILE": pki["ca"], "ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key}
    shown = calicoctl("ipam", "show", env=env)
    assert shown.returncode == 0 and "198.18.40.0/24" in shown.stdout, shown.stderr
    assert calicoctl(*tls, "ippool", "delete", "tls-pool").returncode == 0


def test_calicoctl_without_a_client_certificate_is_refused_in_one_line(tls_etcd, pki):
    out = calicoctl("--etcd-endpoints", tls_etcd.endpoint, "--etcd-ca-cert-file", pki["ca"], "get", "ippools")
    assert out.returncode != 0
    assert out.stderr.startswith("Error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "client certificate" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_calicoctl_with_user_and_password(auth_etcd):
    env = {"ETCD_ENDPOINTS": auth_etcd.endpoint, "ETCD_USERNAME": "calico", "ETCD_PASSWORD": PASSWORD}
    made = calicoctl("ippool", "create", "auth-pool", "--cidr", "198.18.41.0/24", env=env)
    assert made.returncode == 0, made.stderr
    listed = calicoctl("get", "ippools", "-o", "json", env=env)
    assert listed.returncode == 0 and "198.18.41.0/24" in listed.stdout, listed.stderr
    assert calicoctl("ippool", "delete", "auth-pool", env=env).returncode == 0
    wrong = calicoctl("get", "ippools", env={**env, "ETCD_PASSWORD": "wrong-" + PASSWORD})
    assert wrong.returncode != 0 and wrong.stderr.startswith("Error:"), wrong.stderr
    assert PASSWORD not in wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stdout + wrong.stderr
