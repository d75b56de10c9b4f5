"""The per-node agent with node namespaces and etcd: the same results and state as the in-process
path, fallback when it is absent, error 11 (never a second run) when it dies mid-request,
concurrency, and who may reach it. What needs no root (the socket protocol, caller paths, the thin
client's import cost) is in tests/unit/test_agent.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.calico_support import (
    assert_datastore_clean,
    assert_node_clean,
    held_addresses,
    ok,
    pod_env,
    pod_links,
    run_calico,
)
from tests.conftest import plugin_env, plugin_path
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

DUAL = {"assign_ipv6": "true"}


pools = pools_fixture(("v4", "198.18.10.0/24", 26), ("v6", "fd00:198:18:10::/112", 122))


def shape(result: dict) -> dict:
    """A result without the names and addresses that differ between two pods."""
    return {
        "cniVersion": result["cniVersion"],
        "interfaces": [sorted(k for k in i if k not in ("mac",)) for i in result["interfaces"]],
        "ips": [(i["interface"], i["address"].split("/")[1]) for i in result["ips"]],
        "routes": result.get("routes"),
        "dns": result.get("dns"),
    }


def endpoint_shape(endpoint) -> dict:
    spec = dict(endpoint.spec)
    for key in ("pod", "containerID", "endpoint", "interfaceName", "mac", "ipNetworks"):
        spec.pop(key, None)
    return {"labels": sorted((endpoint.doc.get("metadata") or {}).get("labels") or {}), "spec": spec, "nets": [n.split("/")[1] for n in endpoint.spec["ipNetworks"]]}


def test_add_check_del_through_agent_match_in_process(store, pools, node, pod, calico_conf, agents):
    agent = agents(node)
    conf = calico_conf(ipam=DUAL)
    a, b = pod(), pod()
    via_agent = ok(run_calico(node, "ADD", conf, {**pod_env(a), **agent.env()}))
    in_process = ok(run_calico(node, "ADD", conf, pod_env(b)))
    assert agent.served() == 1
    assert shape(via_agent) == shape(in_process)
    assert pod_links(a) == pod_links(b) == ["eth0"]
    hosts = {l["ifname"] for l in node.cali_links()}
    assert hosts == {via_agent["interfaces"][0]["name"], in_process["interfaces"][0]["name"]}
    routed = {r["dst"] for v in (4, 6) for r in node.routes(v) if r["dst"].startswith(("198.18.", "fd00:198:18:"))}
    assert routed == {i["address"].split("/")[0] for r in (via_agent, in_process) for i in r["ips"]}
    endpoints = {e.container_id: e for e in store.workload_endpoints()}
    ea, eb = endpoints[pod_env(a)["CNI_CONTAINERID"]], endpoints[pod_env(b)["CNI_CONTAINERID"]]
    assert endpoint_shape(ea) == endpoint_shape(eb)
    held = held_addresses(store)
    assert sorted(held[f"net1.{pod_env(a)['CNI_CONTAINERID']}"]) == sorted(i["address"].split("/")[0] for i in via_agent["ips"])

    ok(run_calico(node, "CHECK", {**conf, "prevResult": via_agent}, {**pod_env(a), **agent.env()}))
    ok(run_calico(node, "DEL", {**conf, "prevResult": via_agent}, {**pod_env(a), **agent.env()}))
    assert agent.served() == 3
    assert pod_links(a) == []
    assert set(held_addresses(store)) == {f"net1.{pod_env(b)['CNI_CONTAINERID']}"}
    ok(run_calico(node, "DEL", {**conf, "prevResult": in_process}, pod_env(b)))
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_errors_come_back_as_the_plugin_would_print_them(store, pools, node, calico_conf, agents):
    agent = agents(node)
    conf = calico_conf()
    env = pod_env("calico-test-missing", CNI_NETNS="/var/run/netns/calico-test-does-not-exist")
    via_agent = run_calico(node, "ADD", conf, {**env, **agent.env()})
    in_process = run_calico(node, "ADD", conf, env)
    assert agent.served() == 1
    assert (via_agent.rc, via_agent.out) == (in_process.rc, in_process.out)
    assert via_agent.rc == 1 and via_agent.out["code"] == 4


def test_ipam_plugin_through_agent(store, pools, node, calico_conf, agents):
    agent = agents(node)
    conf = {**calico_conf(), "type": "calico-ipam"}
    conf.pop("ipam")
    conf["ipam"] = {"type": "calico-ipam"}
    env = {**pod_env("calico-test-ipamonly", container_id="ipam-ctr"), **agent.env()}
    result = ok(run_calico(node, "ADD", conf, env, plugin="calico-ipam"))
    assert agent.served() == 1
    assert held_addresses(store) == {"net1.ipam-ctr": [result["ips"][0]["address"].split("/")[0]]}
    ok(run_calico(node, "DEL", conf, env, plugin="calico-ipam"))
    assert held_addresses(store) == {}


def test_version_through_agent_matches_in_process(node, calico_conf, agents):
    # The thin client forwards VERSION too: answering it in-process would import the protocol
    # modules (about 30 ms), the agent answers in about 1 ms.
    agent = agents(node)
    for plugin in ("calico", "calico-ipam"):
        via_agent = run_calico(node, "VERSION", calico_conf(), agent.env(), plugin=plugin)
        in_process = run_calico(node, "VERSION", calico_conf(), {}, plugin=plugin)
        assert (via_agent.rc, via_agent.stdout) == (in_process.rc, in_process.stdout)
        assert "1.0.0" in ok(via_agent)["supportedVersions"]
    assert agent.served() == 2


def test_absent_or_refusing_agent_falls_back_to_in_process(store, pools, node, pod, calico_conf, tmp_path):
    conf = calico_conf()
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on: connection refused
    for path in (str(tmp_path / "absent.sock"), str(stale)):
        p = pod()
        result = ok(run_calico(node, "ADD", conf, {**pod_env(p), "CALICO_CNI_AGENT_SOCKET": path}))
        ok(run_calico(node, "DEL", {**conf, "prevResult": result}, {**pod_env(p), "CALICO_CNI_AGENT_SOCKET": path}))
    assert_node_clean(node)
    assert_datastore_clean(store)


def _exec_without_socket_env(node, command: str, config: dict, env: dict) -> dict | None:
    """Exec calico with no CALICO_CNI_AGENT_SOCKET at all (so the config key decides)."""
    full = {k: v for k, v in plugin_env().items() if k != "CALICO_CNI_AGENT_SOCKET"}
    full.update({"CNI_COMMAND": command, **env})
    proc = subprocess.run(["nsenter", f"--net={node.path}", plugin_path("calico")], input=json.dumps(config).encode(), env=full, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_config_key_names_the_socket(store, pools, node, pod, calico_conf, agents):
    agent = agents(node)
    conf = calico_conf(agent_socket=agent.socket)
    p = pod()
    # The environment variable wins over the key: empty means in-process.
    result = ok(run_calico(node, "ADD", conf, pod_env(p)))
    assert agent.served() == 0
    ok(run_calico(node, "DEL", {**conf, "prevResult": result}, pod_env(p)))
    result = _exec_without_socket_env(node, "ADD", conf, pod_env(p))
    assert agent.served() == 1
    _exec_without_socket_env(node, "DEL", {**conf, "prevResult": result}, pod_env(p))
    assert agent.served() == 2
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_agent_killed_mid_request_gives_error_11_and_no_second_run(store, pools, node, pod, calico_conf, agents):
    agent = agents(node, CALICO_CNI_TEST_KILL_AT_WRITE="1")
    p = pod()
    run = run_calico(node, "ADD", calico_conf(), {**pod_env(p), **agent.env()})
    assert run.rc == 1 and run.out["code"] == 11, run.stdout
    assert agent.proc.wait(15) == -signal.SIGKILL
    # Run in-process, this ADD would have succeeded: nothing of it may exist.
    assert pod_links(p) == []
    assert store.workload_endpoints() == []
    assert held_addresses(store) == {}


def test_concurrent_requests(store, pools, node, pod, calico_conf, agents):
    agent = agents(node)
    conf = calico_conf(ipam=DUAL)
    pods = [pod() for _ in range(8)]
    with ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(lambda p: ok(run_calico(node, "ADD", conf, {**pod_env(p), **agent.env()})), pods))
    addresses = [i["address"] for r in results for i in r["ips"]]
    assert len(addresses) == len(set(addresses)) == 16
    assert len(node.cali_links()) == 8
    assert agent.served() == 8
    with ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(lambda pr: ok(run_calico(node, "DEL", {**conf, "prevResult": pr[1]}, {**pod_env(pr[0]), **agent.env()})), zip(pods, results)))
    assert agent.served() == 16
    assert_node_clean(node)
    assert_datastore_clean(store)


def test_serves_a_caller_in_another_network_namespace_in_that_namespace(store, pools, nodes, calico_conf, agents):
    """One agent serves plugins run in any namespace: the node's side (host veth, routes, sysctls)
    is set up in the caller's namespace, never the agent's."""
    from tests.calico_support import in_ns, make_pod

    home, other = nodes(), nodes()
    agent = agents(home)
    pod_name = make_pod(other)
    env = {**pod_env(pod_name), **agent.env()}
    result = ok(run_calico(other, "ADD", calico_conf(), env))
    assert agent.served() == 1
    host_veth = result["interfaces"][0]["name"]
    assert [l["ifname"] for l in other.cali_links()] == [host_veth]
    assert home.cali_links() == []
    (ip,) = [i["address"].split("/")[0] for i in result["ips"]]
    assert [r["dst"] for r in other.routes(4) if r["dst"].startswith("198.18.")] == [ip]
    assert in_ns(other.name, "cat", f"/proc/sys/net/ipv4/conf/{host_veth}/proxy_arp").stdout.strip() == "1"
    in_ns(other.name, "ping", "-c", "1", "-W", "2", ip)  # the pod answers through the caller's node
    ok(run_calico(other, "CHECK", {**calico_conf(), "prevResult": result}, env))
    ok(run_calico(other, "DEL", calico_conf(), env))
    assert agent.served() == 3
    assert_node_clean(other)
    assert_node_clean(home)
    assert_datastore_clean(store)


def test_a_plugin_cannot_be_pointed_at_the_callers_own_namespace(store, pools, nodes, calico_conf, agents):
    """CNI_NETNS naming the caller's own namespace is refused through the agent too (error 4),
    although it is not the agent's namespace."""
    home, other = nodes(), nodes()
    agent = agents(home)
    env = {**pod_env("unused", container_id="selfns"), "CNI_NETNS": other.path, **agent.env()}
    run = run_calico(other, "ADD", calico_conf(), env)
    assert run.rc == 1 and run.out["code"] == 4 and "own network namespace" in run.out["msg"], run.stdout
    assert_node_clean(other)
    assert_datastore_clean(store)


def test_socket_is_root_only(node, agents):
    agent = agents(node)
    assert stat.S_ISSOCK(os.stat(agent.socket).st_mode)
    assert stat.S_IMODE(os.stat(agent.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(agent.socket)).st_mode) == 0o700
    assert os.stat(agent.socket).st_uid == 0
    # Even with its directory opened up, another user cannot connect; with the socket opened up
    # too, the same probe connects (so the probe can tell the two apart).
    os.chmod(os.path.dirname(agent.socket), 0o755)
    assert _connect_as_nobody(agent.socket) == "EACCES"
    os.chmod(agent.socket, 0o666)
    assert _connect_as_nobody(agent.socket) == "connected"


def _connect_as_nobody(path: str) -> str:
    """Try to connect to `path` as uid/gid 65534, reaching its directory through a descriptor
    opened as root (so only the directory's and the socket's own modes decide)."""
    directory = os.open(os.path.dirname(path), os.O_PATH)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only os calls, then _exit
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(f"/proc/self/fd/{directory}/{os.path.basename(path)}")
                outcome = b"connected"
            except PermissionError:
                outcome = b"EACCES"
            except OSError as exc:
                outcome = str(exc).encode()
            os.write(write, outcome)
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    outcome = os.read(read, 200).decode()
    os.close(read)
    os.close(directory)
    return outcome


def test_health_command(node, agents, tmp_path):
    agent = agents(node)
    assert agent.health().returncode == 0
    agent.stop()
    assert not os.path.exists(agent.socket)
    absent = subprocess.run([plugin_path("calico-cni-agent"), "health", "--socket", agent.socket], capture_output=True, text=True)
    assert absent.returncode == 1


def test_default_log_file_and_stderr_come_from_the_callers_environment(store, pools, node, calico_conf, agents, tmp_path):
    """$CALICO_CNI_LOG_FILE of the plugin's environment names the log file when the config has
    none, through the agent as in-process (the agent's own environment does not decide); the
    request's warnings and errors come back on the plugin's stderr."""
    agent = agents(node)
    conf = calico_conf()
    conf.pop("log_file_path")
    env = pod_env("calico-test-missing", CNI_NETNS="/var/run/netns/calico-test-does-not-exist")
    for name, extra in (("agent", agent.env()), ("in-process", {})):
        log_file = tmp_path / f"{name}.log"
        run = run_calico(node, "ADD", conf, {**env, **extra, "CALICO_CNI_LOG_FILE": str(log_file)})
        assert run.rc == 1 and run.out["code"] == 4, run.stdout
        assert "calico ADD failed" in log_file.read_text(), name
        assert "calico ADD failed" in run.stderr, name
    assert agent.served() == 1


def test_agent_refuses_a_caller_of_another_uid(bare_server):
    """The socket is root-only; should another user reach it anyway (modes opened up), the agent
    refuses its request with a CNI error and runs nothing."""
    from calico_cni.agent import wire

    path, server = bare_server
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o666)
    directory = os.open(os.path.dirname(path), os.O_PATH)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: connect as uid 65534, send one request, hand the answer back
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(f"/proc/self/fd/{directory}/{os.path.basename(path)}")
            wire.send_request(s, "calico", {"CNI_COMMAND": "ADD"}, b'{"cniVersion": "1.0.0"}')
            code, out, _ = wire.recv_answer(s)
            os.write(write, str(code).encode() + b" " + out)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(write, f"error {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    answer = b""
    while chunk := os.read(read, 4096):
        answer += chunk
    os.close(read)
    os.close(directory)
    code, _, out = answer.decode().partition(" ")
    assert code == "1", answer
    error = json.loads(out)
    assert error["code"] == 4 and "refused" in error["msg"] and "uid 65534" in error["details"], error
    assert server.served == 0


def test_journal_directory_comes_from_the_callers_environment(store, pools, node, pod, calico_conf, agents, tmp_path):
    """$CALICO_RELEASE_JOURNAL_DIR is read from the request's environment, as the exec'd plugin
    reads its own, never from the agent's."""
    agents_dir, callers_dir = tmp_path / "agent-journal", tmp_path / "caller-journal"
    agent = agents(node, CALICO_RELEASE_JOURNAL_DIR=str(agents_dir))
    conf = calico_conf()
    assert "release_journal_dir" not in conf
    p = pod()
    env = {**pod_env(p), **agent.env(), "CALICO_RELEASE_JOURNAL_DIR": str(callers_dir)}
    ok(run_calico(node, "ADD", conf, env))
    assert len(os.listdir(callers_dir / "held")) == 1
    assert not agents_dir.exists()
    ok(run_calico(node, "DEL", conf, env))
    assert os.listdir(callers_dir / "held") == []
    assert_datastore_clean(store)


def test_an_agent_started_with_timing_reports_each_requests_phases(store, pools, node, pod, calico_conf, agents):
    """CALICO_CNI_TIMING=1 on the agent: each request's stderr ends with its own timing line
    (daemon_ms and the phases of that request only), which the plugin prints (bench/plugins.py)."""
    agent = agents(node, CALICO_CNI_TIMING="1")
    conf = calico_conf()
    env = {**pod_env(pod()), **agent.env()}
    reports = []
    for command in ("ADD", "DEL", "DEL"):
        run = run_calico(node, command, conf, env)
        assert run.rc == 0, run.stdout
        lines = [line for line in run.stderr.splitlines() if line.startswith("calico-cni timing ")]
        assert len(lines) == 1, run.stderr
        reports.append(json.loads(lines[0].split(" ", 2)[2]))
    added, deleted, again = reports
    assert 0 < added["etcd_ms"] <= added["daemon_ms"] and added["etcd_calls"] >= 2
    assert 0 < added["netlink_ms"] <= added["daemon_ms"]
    assert deleted["etcd_calls"] >= 1 and "journal_calls" not in again
    # A request's totals are its own: the second DEL (nothing left to do) reports fewer etcd calls
    # than the ADD and DEL before it added up.
    assert again["etcd_calls"] < added["etcd_calls"] + deleted["etcd_calls"]
