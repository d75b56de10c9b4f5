"""The TLS files checked before the first etcd call (`datastore.tls.load_tls_credentials`), without
etcd: the refusals a test etcd is not needed for. The rest (untrusted, expired, encrypted or
mismatched files) is tested against a TLS etcd in tests/etcd/test_security_etcd.py."""

from __future__ import annotations

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.errors import DatastoreCredentialsError
from calico_cni.datastore.tls import load_tls_credentials


@pytest.mark.parametrize("setting", ["ca_cert_file", "cert_file"])
def test_a_file_larger_than_a_mib_is_refused_before_it_is_parsed(tmp_path, setting):
    """A CA or certificate setting that names a huge file (a log, an image) is refused naming the
    setting and the file."""
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    files = {"cert_file": str(big), "key_file": str(big)} if setting == "cert_file" else {setting: str(big)}
    with pytest.raises(DatastoreCredentialsError) as info:
        load_tls_credentials(EtcdSettings(("https://127.0.0.1:2379",), **files))
    err = info.value
    assert err.msg == f"etcd_{setting}/ETCD_{setting.upper()} {big} is not a PEM file", err.msg
    assert err.details == "it is larger than 1 MiB"


def test_a_mib_of_garbage_is_read_and_refused_as_no_ca(tmp_path):
    """Exactly 1 MiB is not too large: it is read and then found to hold no certificate."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"x" * (1024 * 1024))
    with pytest.raises(DatastoreCredentialsError) as info:
        load_tls_credentials(EtcdSettings(("https://127.0.0.1:2379",), ca_cert_file=str(garbage)))
    assert info.value.msg == f"etcd_ca_cert_file/ETCD_CA_CERT_FILE {garbage} holds no usable CA certificate"
