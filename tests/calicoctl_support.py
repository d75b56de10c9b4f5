"""Helpers for the calicoctl tests: run the command (in-process with click's CliRunner, or the
installed executable) against the test etcd, and plant IPAM state."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from calico_cni.ctl.main import cli
from calico_cni.model.records import WorkloadEndpoint
from calico_cni.datastore.store import Datastore
from calico_ipam.allocator import Assigned, Attachment, FamilyRequest, assign
from tests.conftest import BIN_DIR


@dataclass
class Run:
    """What one calicoctl invocation did."""

    rc: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


@pytest.fixture
def ctl(etcd_endpoint):
    """Run calicoctl in-process against the (emptied) test etcd: ctl("get", "ippools")."""

    def run(*args: str, env: dict | None = None, endpoint: bool = True) -> Run:
        argv = (["--etcd-endpoints", etcd_endpoint] if endpoint else []) + list(args)
        result = CliRunner(env=env).invoke(cli, argv, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def run_exe(*args: str, env: dict | None = None, timeout: float = 60) -> Run:
    """Run the installed `calicoctl` executable (the venv's console script)."""
    full_env = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    proc = subprocess.run([str(BIN_DIR / "calicoctl"), *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def allocate(store: Datastore, handle: str, node: str = "node1", address: str | None = None, ifname: str = "eth0") -> Assigned:
    """One IPv4 (or the given) address for `handle` on `node`, through the allocator."""
    if address:
        ip = ipaddress.ip_address(address)
        request = FamilyRequest(ip.version, address=ip)
    else:
        request = FamilyRequest(4)
    return assign(store, Attachment(handle, node, ifname), [request])[0]


def add_endpoint(store: Datastore, name: str, node: str, container_id: str, *addresses, namespace: str = "default") -> WorkloadEndpoint:
    """A WorkloadEndpoint as the calico plugin writes it, claiming `addresses` (/32 or /128)."""
    nets = [f"{a}/{32 if ipaddress.ip_address(str(a)).version == 4 else 128}" for a in addresses]
    wep = WorkloadEndpoint(
        namespace,
        name,
        {
            "kind": "WorkloadEndpoint",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"orchestrator": "cni", "node": node, "containerID": container_id, "endpoint": "eth0", "interfaceName": "eth0", "ipNetworks": nets},
        },
    )
    assert store.commit(puts=[wep])
    return wep


def age_allocation(store: Datastore, a: Assigned, seconds: float = 3600) -> None:
    """Make an allocation look `seconds` old (its secondary.timestamp), as a leak from long ago."""
    block = store.block(a.block)
    index = block.allocations[a.ordinal]
    attr = json.loads(json.dumps(block.attributes[index]))
    attr["secondary"]["timestamp"] = (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    if block.allocations.count(index) == 1:
        block.attributes[index] = attr
    else:
        block.attributes.append(attr)
        block.allocations[a.ordinal] = len(block.attributes) - 1
    assert store.commit(puts=[block])
