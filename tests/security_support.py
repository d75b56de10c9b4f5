"""Helpers shared by the security and fuzz tests: etcd snapshots and the checks every refused
request must pass (CNI error JSON with the right code, non-zero exit, no traceback, no secret)."""

from __future__ import annotations

import json

from calico_cni.datastore.etcd import EtcdClient


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
