"""The installed `calico-ipam` executable's protocol behaviour (exec'd, so run again through the
agent). Its `etcd_endpoints` point at a closed port: a protocol or config error must be reported
before etcd is contacted, so the answer is that error, never 11 ("try again later"). The protocol
layer itself (parsing, versions, results, the runner, config keys) is tested without exec in
tests/unit/test_protocol.py.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.cni_requests import ALL_VERSIONS, ATTACH_VARS, env, one_json_object
from tests.conftest import run_plugin

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)


# ------------------------------------------------------------------------------------------------
# The installed executable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def exe_conf(tmp_path):
    """A calico-ipam config whose etcd endpoint is a closed port (etcd is never reachable)."""
    port = closed_port()

    def make(version: str = "1.0.0", **extra) -> dict:
        out = {
            "cniVersion": version,
            "name": "net1",
            "type": "calico-ipam",
            "etcd_endpoints": f"http://127.0.0.1:{port}",
            "etcd_timeout": 1,
            "nodename": "node1",
            "log_file_path": str(tmp_path / "cni.log"),
            "log_level": "debug",
            "ipam": {"type": "calico-ipam"},
        }
        out.update(extra)
        return out

    return make


def exe_env(**overrides) -> dict:
    out = env("ADD", **overrides)
    out.pop("CNI_COMMAND")
    return out


def check_clean(run) -> dict:
    """Exactly one JSON object on stdout; no traceback anywhere."""
    assert "Traceback" not in run.stdout and "Traceback" not in run.stderr, run.stdout + run.stderr
    return one_json_object(run.stdout)


def test_exe_version_podman_probe():
    r = run_plugin("calico-ipam", "VERSION", {"cniVersion": "1.0.0"}, {"CNI_CONTAINERID": "", "CNI_NETNS": "dummy"})
    assert r.rc == 0, r.stdout + r.stderr
    assert check_clean(r) == {"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS}


def test_exe_version_with_garbage_stdin():
    r = run_plugin("calico-ipam", "VERSION", b"\xff garbage")
    assert r.rc == 0
    assert check_clean(r)["supportedVersions"] == ALL_VERSIONS


@pytest.mark.parametrize("command", ["", "add", "NOPE"])
def test_exe_bad_command(command, exe_conf):
    r = run_plugin("calico-ipam", command, exe_conf(), exe_env())
    assert r.rc != 0
    obj = check_clean(r)
    assert obj["code"] == 4 and "CNI_COMMAND" in obj["msg"]


@pytest.mark.parametrize("var", ATTACH_VARS)
def test_exe_missing_variable(var, exe_conf):
    r = run_plugin("calico-ipam", "ADD", exe_conf("0.4.0"), exe_env(**{var: None}))
    assert r.rc != 0
    obj = check_clean(r)
    assert obj["code"] == 4 and var in obj["msg"]
    assert obj["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("overrides", [{"CNI_IFNAME": "a" * 16}, {"CNI_IFNAME": "a/b"}, {"CNI_CONTAINERID": "../x"}, {"CNI_ARGS": "Bogus=1"}])
def test_exe_bad_environment(overrides, exe_conf):
    r = run_plugin("calico-ipam", "ADD", exe_conf(), exe_env(**overrides))
    assert r.rc != 0
    assert check_clean(r)["code"] == 4


@pytest.mark.parametrize("data,code", [(b"{not json", 6), (b"", 6), (b"\xff\xfe", 6), (b"[]", 7), (b"42", 7)])
def test_exe_bad_stdin(data, code):
    r = run_plugin("calico-ipam", "ADD", data, exe_env())
    assert r.rc != 0
    assert check_clean(r)["code"] == code


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0", None])
def test_exe_unsupported_version(version, exe_conf):
    config = exe_conf()
    if version is None:
        del config["cniVersion"]
    else:
        config["cniVersion"] = version
    r = run_plugin("calico-ipam", "ADD", config, exe_env())
    assert r.rc != 0
    obj = check_clean(r)
    assert obj["code"] == 1
    assert obj["cniVersion"] in ALL_VERSIONS


def test_exe_check_below_0_4_0(exe_conf):
    r = run_plugin("calico-ipam", "CHECK", exe_conf("0.3.1", prevResult={"cniVersion": "0.3.1", "ips": []}), exe_env())
    obj = check_clean(r)
    assert r.rc != 0 and obj["code"] == 1 and obj["cniVersion"] == "0.3.1"


def test_exe_check_without_prev_result(exe_conf):
    r = run_plugin("calico-ipam", "CHECK", exe_conf("1.0.0"), exe_env())
    obj = check_clean(r)
    assert r.rc != 0 and obj["code"] == 7 and "prevResult" in obj["msg"]


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
def test_exe_gc_status_below_1_1_0(verb, exe_conf):
    r = run_plugin("calico-ipam", verb, exe_conf("1.0.0"), {})
    obj = check_clean(r)
    assert r.rc != 0 and obj["code"] == 1


def test_exe_unreachable_etcd_is_error_11(exe_conf):
    """The control for the tests below: a valid request with the closed port really gives 11."""
    r = run_plugin("calico-ipam", "ADD", exe_conf(), exe_env(), timeout=30)
    assert r.rc != 0
    obj = check_clean(r)
    assert obj["code"] == 11, obj
    assert "127.0.0.1" in obj["msg"]


@pytest.mark.parametrize(
    "verb,changes,code,fragment",
    [
        ("ADD", {"ipam": None}, 7, "ipam"),
        ("ADD", {"ipam": {"type": ""}}, 7, "ipam.type"),
        ("ADD", {"ipam": {"type": "calico-ipam", "assign_ipv4": "maybe"}}, 7, "assign_ipv4"),
        ("ADD", {"ipam": {"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "false"}}, 7, "assigns no address"),
        ("ADD", {"ipam": {"type": "calico-ipam", "ipv4_pools": "p1"}}, 7, "ipv4_pools"),
        ("ADD", {"datastore_type": "kubernetes"}, 7, "kubernetes"),
        ("ADD", {"etcd_endpoints": "127.0.0.1:2379"}, 7, "127.0.0.1:2379"),
        ("ADD", {"nodename": None, "nodename_file": "/nonexistent/nodename"}, 7, "/nonexistent/nodename"),
        ("ADD", {"runtimeConfig": {"ips": "198.18.0.5"}}, 7, "runtimeConfig.ips"),
        ("ADD", {"runtimeConfig": {"ips": ["not-an-ip"]}}, 7, "not-an-ip"),
        ("ADD", {"runtimeConfig": {"ips": ["198.18.0.5", "198.18.0.6"]}}, 7, "at most one"),
        ("ADD", {"log_level": 5}, 7, "log_level"),
        ("DEL", {"ipam": None}, 7, "ipam"),
        ("DEL", {"datastore_type": "kubernetes"}, 7, "kubernetes"),
        ("CHECK", {"ipam": None, "prevResult": {"ips": []}}, 7, "ipam"),
        ("CHECK", {"prevResult": {"ips": [{"address": "garbage"}]}}, 7, "garbage"),
    ],
)
def test_exe_config_errors_come_before_etcd(verb, changes, code, fragment, exe_conf):
    config = exe_conf()
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    r = run_plugin("calico-ipam", verb, config, exe_env(), timeout=30)
    assert r.rc != 0
    obj = check_clean(r)
    assert obj["code"] == code, obj
    assert fragment in obj["msg"], obj


def test_exe_bad_ip_arg_comes_before_etcd(exe_conf):
    r = run_plugin("calico-ipam", "ADD", exe_conf(), exe_env(CNI_ARGS="IP=not-an-ip"), timeout=30)
    obj = check_clean(r)
    assert r.rc != 0 and obj["code"] == 4 and "not-an-ip" in obj["msg"]


def test_exe_check_with_non_list_ips_is_error_7(exe_conf):
    r = run_plugin("calico-ipam", "CHECK", exe_conf(prevResult={"ips": 5}), exe_env(), timeout=30)
    obj = check_clean(r)
    assert r.rc != 0 and obj["code"] == 7, obj


def test_exe_del_without_netns_succeeds(ipam_conf):
    environ = exe_env(CNI_NETNS=None)
    r = run_plugin("calico-ipam", "DEL", ipam_conf(), environ)
    assert r.rc == 0, r.stdout + r.stderr
    assert r.stdout == ""
    r = run_plugin("calico-ipam", "DEL", ipam_conf(), {**environ, "CNI_NETNS": ""})
    assert r.rc == 0, r.stdout + r.stderr


@pytest.mark.parametrize("key", ["log_file_max_count", "log_file_max_size"])
def test_exe_non_finite_log_numbers_are_error_7(key, exe_conf):
    config = json.dumps(exe_conf()).replace('"log_level"', f'"{key}": 1e309, "log_level"')
    r = run_plugin("calico-ipam", "ADD", config, exe_env(), timeout=30)
    assert r.rc != 0
    obj = one_json_object(r.stdout)
    assert obj["code"] == 7 and key in obj["msg"], obj


def crashing_ipam_plugin(tmp_path) -> str:
    """calico-ipam as installed, except that its ADD handler raises (a bug we cannot provoke
    otherwise); the launcher runs `python -I -S`, so the patch goes into the script itself."""
    from calico_cni.launcher import render

    header, _, entry = render("calico_ipam.main:main").rpartition("from calico_ipam.main")
    patch = "import calico_cni.plugins.calico_ipam as p\ndef add(request, services):\n    raise RuntimeError('provoked crash')\np.add = add\n"
    path = tmp_path / "calico-ipam-crashing"
    path.write_text(header + patch + "from calico_ipam.main" + entry)
    path.chmod(0o755)
    return str(path)


def test_exe_unexpected_crash_is_code_100_json(exe_conf, tmp_path):
    """An exception nobody expected (provoked by patching the ADD handler through sitecustomize)."""
    # The patched process itself must run the request, also in CALICO_TEST_VIA_AGENT mode.
    r = run_plugin(crashing_ipam_plugin(tmp_path), "ADD", exe_conf(), {**exe_env(), "CALICO_CNI_AGENT_SOCKET": ""}, timeout=30)
    assert r.rc == 1
    obj = one_json_object(r.stdout)
    assert obj["code"] == 100 and "provoked crash" in obj["msg"], obj
    assert "Traceback" not in r.stdout
    # The details go to the plugin log.
    assert "provoked crash" in (tmp_path / "cni.log").read_text()


def test_exe_unexpected_crash_prints_no_traceback_on_stderr(exe_conf, tmp_path):
    # The patched process itself must run the request, also in CALICO_TEST_VIA_AGENT mode.
    r = run_plugin(crashing_ipam_plugin(tmp_path), "ADD", exe_conf(), {**exe_env(), "CALICO_CNI_AGENT_SOCKET": ""}, timeout=30)
    assert r.rc == 1 and one_json_object(r.stdout)["code"] == 100
    assert "Traceback" not in r.stderr, r.stderr
