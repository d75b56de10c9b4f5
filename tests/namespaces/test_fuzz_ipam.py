"""Hostile input for calico-ipam, fuzzed with hypothesis.

Every refused request must give one CNI error JSON object on stdout with the right code, a non-zero
exit, no traceback anywhere, and no change in etcd (all keys are compared before and after each
example). The bulk runs in-process through `calico_cni.protocol.runner.run` with calico-ipam's
handlers (cheap); a representative sample runs the installed `calico-ipam` executable.

The state every example starts from: pool 198.18.0.0/24, node1 registered and holding a block,
attachment net1/keep/eth0 holding an address (so a DEL or CHECK that wrongly went through would
show up as a change).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import logging
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from calico_cni.config import NODE_NAME_RE, EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.store import Datastore
from calico_cni.plugins.dispatch import lazy, setup_logging, translate
from calico_cni.protocol.request import MAX_STDIN, NAME_RE
from calico_cni.protocol.runner import run
from calico_cni.protocol.versions import SUPPORTED_VERSIONS
from tests.conftest import BIN_DIR, cni_env, plugin_env, run_plugin, wipe
from tests.pools import create_pool
from tests.security_support import cni_error, one_json_object, snapshot, succeeded

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

HANDLERS = {verb: lazy("calico_cni.plugins.calico_ipam", name) for verb, name in (("ADD", "add"), ("DEL", "delete"), ("CHECK", "check"))}
VERBS = ("ADD", "DEL", "CHECK")
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PREV = {"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.1/26"}]}


# -- harness -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(etcd, tmp_path_factory):
    """The etcd state every example starts from, and a client to snapshot it."""
    wipe(etcd.endpoint)
    store = Datastore(EtcdClient(EtcdSettings((etcd.endpoint,))))
    create_pool(store, "p1", "198.18.0.0/24")
    log_dir = tmp_path_factory.mktemp("fuzz-log")
    w = World(etcd.endpoint, store, str(log_dir / "cni.log"))
    rc, out, err = w.invoke("ADD", w.conf(), cni_env("keep"))
    assert rc == 0, out + err
    w.kept = json.loads(out)
    yield w
    store.close()


class World:
    def __init__(self, endpoint: str, store: Datastore, log_path: str) -> None:
        self.endpoint = endpoint
        self.store = store
        self.log_path = log_path
        self.kept: dict = {}

    def conf(self, verb: str = "ADD", **extra) -> dict:
        out = {
            "cniVersion": "1.0.0",
            "name": "net1",
            "type": "calico-ipam",
            "etcd_endpoints": self.endpoint,
            "etcd_timeout": 2,
            "nodename": "node1",
            "log_file_path": self.log_path,
            "log_level": "debug",
            "ipam": {"type": "calico-ipam"},
        }
        if verb == "CHECK":
            out["prevResult"] = PREV
        out.update(extra)
        return out

    def invoke(self, verb: str, config, env: dict) -> tuple[int, str, str]:
        """One in-process invocation; returns (exit code, stdout, stderr)."""
        stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        try:
            with contextlib.redirect_stderr(err):
                # The environment an exec'd plugin gets from the tests (plugin_env: the session's
                # journal directory among others), then the runtime's CNI_* variables.
                rc = run(HANDLERS, "calico-ipam", environ={**plugin_env(), "CNI_COMMAND": verb, **env}, stdin=stdin, stdout=out,
                         setup=setup_logging("calico-ipam"), translate=translate)
        finally:
            for h in root.handlers[:]:
                if h not in saved[0]:
                    root.removeHandler(h)
                    h.close()
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        return rc, out.getvalue(), err.getvalue()

    def refused(self, verb: str, config, env: dict, codes: set[int], mentions: str | None = None) -> dict:
        """The request is refused with one of `codes`, cleanly, and etcd is unchanged."""
        before = snapshot(self.store.client)
        rc, out, err = self.invoke(verb, config, env)
        after = snapshot(self.store.client)
        assert rc != 0, f"{verb} accepted hostile input: {out!r}"
        obj = one_json_object(out)
        assert {"cniVersion", "code", "msg"} <= set(obj) <= {"cniVersion", "code", "msg", "details"}, obj
        assert "Traceback" not in out and "Traceback" not in err, out + err
        assert obj["code"] in codes, (verb, obj)
        if mentions is not None:
            assert mentions.lower() in (obj["msg"] + " " + obj.get("details", "")).lower(), (mentions, obj)
        assert after == before, f"{verb} changed etcd before failing: {obj}"
        return obj


# -- value strategies ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _is_bool(v) -> bool:
    return isinstance(v, bool) or (isinstance(v, str) and v.lower() in ("true", "false"))


def _is_number(v, lo, hi=math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


# What a value of each kind of key may be; a hostile value is anything else.
KINDS = {
    "string": lambda v: v is None or isinstance(v, str),  # null means "not set"
    "required-string": lambda v: isinstance(v, str) and v != "",
    "bool": _is_bool,
    "number": lambda v: _is_number(v, 0),
    "timeout": lambda v: _is_number(v, 0.1, 300),
    "operation-timeout": lambda v: _is_number(v, 0.1, 55),
    "object": lambda v: isinstance(v, dict),
    "pool-list": lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
}

# (path of the key, its kind, the word the error must mention). Every key calico-ipam reads.
KEYS = [
    (("cniVersion",), "required-string", "cniVersion"),
    (("name",), "required-string", "name"),
    (("type",), "required-string", "type"),
    (("ipam",), "object", "ipam"),
    (("ipam", "type"), "required-string", "ipam.type"),
    (("ipam", "assign_ipv4"), "bool", "assign_ipv4"),
    (("ipam", "assign_ipv6"), "bool", "assign_ipv6"),
    (("ipam", "ipv4_pools"), "pool-list", "ipv4_pools"),
    (("ipam", "ipv6_pools"), "pool-list", "ipv6_pools"),
    (("etcd_endpoints",), "string", "etcd_endpoints"),
    (("etcd_authority",), "string", "etcd_authority"),
    (("etcd_ca_cert_file",), "string", "etcd_ca_cert_file"),
    (("etcd_cert_file",), "string", "etcd_cert_file"),
    (("etcd_key_file",), "string", "etcd_key_file"),
    (("etcd_username",), "string", "etcd_username"),
    (("etcd_password",), "string", "etcd_password"),
    (("etcd_timeout",), "timeout", "etcd_timeout"),
    (("add_timeout",), "operation-timeout", "add_timeout"),
    (("datastore_type",), "string", "datastore_type"),
    (("nodename",), "string", "nodename"),
    (("nodename_file",), "string", "nodename_file"),
    (("nodename_file_optional",), "bool", "nodename_file_optional"),
    (("log_level",), "string", "log_level"),
    (("log_file_path",), "string", "log_file_path"),
    (("log_file_max_size",), "number", "log_file_max_size"),
    (("log_file_max_count",), "number", "log_file_max_count"),
    (("log_file_max_age",), "number", "log_file_max_age"),
    (("runtimeConfig",), "object", "runtimeConfig"),
    (("prevResult",), "object", "prevResult"),
]
KNOWN_TOP = {path[0] for path, _, _ in KEYS} | {"capabilities", "args"}
KNOWN_IPAM = {path[1] for path, _, _ in KEYS if len(path) == 2}


def with_value(config: dict, path: tuple[str, ...], value) -> dict:
    config = json.loads(json.dumps(config))
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return config


@st.composite
def wrong_typed(draw):
    path, kind, word = draw(st.sampled_from(KEYS))
    value = draw(json_values.filter(lambda v: not KINDS[kind](v)))
    return path, value, word


# -- config keys ---------------------------------------------------------------------------------


@FUZZ
@given(case=wrong_typed(), verb=st.sampled_from(VERBS))
@example(case=(("etcd_timeout",), float("nan"), "etcd_timeout"), verb="ADD")
@example(case=(("etcd_timeout",), float("inf"), "etcd_timeout"), verb="DEL")
@example(case=(("log_file_max_count",), float("inf"), "log_file_max_count"), verb="ADD")
@example(case=(("etcd_password",), 123456789, "etcd_password"), verb="ADD")
@example(case=(("ipam",), None, "ipam"), verb="DEL")
def test_wrong_json_type_for_every_key(world, case, verb):
    path, value, word = case
    config = with_value(world.conf(verb), path, value)
    expected = {7}
    if path == ("cniVersion",) and isinstance(value, str):
        expected = {1}  # a string, but not a version we speak
    obj = world.refused(verb, config, cni_env("c1"), expected, mentions=word.split(".")[-1])
    if path == ("etcd_password",):
        assert json.dumps(value) not in obj["msg"] + obj.get("details", "")


@FUZZ
@given(verb=st.sampled_from(VERBS), key=st.sampled_from(["cniVersion", "name", "type", "ipam"]))
def test_missing_required_key(world, verb, key):
    config = world.conf(verb)
    del config[key]
    world.refused(verb, config, cni_env("c1"), {1} if key == "cniVersion" else {7}, mentions=key)


@FUZZ
@given(value=st.text(max_size=30).filter(lambda s: s not in SUPPORTED_VERSIONS), verb=st.sampled_from(VERBS))
def test_unsupported_cni_version_string(world, value, verb):
    world.refused(verb, world.conf(verb, cniVersion=value), cni_env("c1"), {1})


hostile_names = st.one_of(
    st.sampled_from(["../net1", "net/1", "/", "..", ".", "net1\n", "net 1", "-net", "ne\x00t", "net1/../../x", "a" * 1025]),
    st.text(min_size=1, max_size=40).filter(lambda s: not NAME_RE.fullmatch(s)),
)


@FUZZ
@given(name=hostile_names, verb=st.sampled_from(VERBS))
def test_hostile_network_name(world, name, verb):
    world.refused(verb, world.conf(verb, name=name), cni_env("c1"), {7}, mentions="network name")


@FUZZ
@given(
    ipam_type=st.one_of(
        st.sampled_from(["../calico-ipam", "/usr/bin/calico-ipam", "..", ".", "calico/ipam", "./calico-ipam", "x\ny"]),
        st.text(min_size=1, max_size=20).map(lambda s: s + "/" + s),
    ),
    verb=st.sampled_from(VERBS),
)
def test_ipam_type_that_is_a_path(world, ipam_type, verb):
    """For calico-ipam the type is only a name (it is already running); it is still refused, as
    the `calico` plugin must never exec a path taken from the config."""
    world.refused(verb, world.conf(verb, ipam={"type": ipam_type}), cni_env("c1"), {7}, mentions="ipam.type")


@FUZZ
@given(
    node=st.one_of(
        st.sampled_from(["../node1", "node1/ipv4/block", "/", "..", "node 1", "node1\n", "-node", "a" * 254, "nöde"]),
        st.text(min_size=1, max_size=40).filter(lambda s: not NODE_NAME_RE.fullmatch(s)),
    ),
    verb=st.sampled_from(VERBS),
)
def test_hostile_node_name(world, node, verb):
    """A node name becomes part of etcd keys: '/' or '..' there could address other records."""
    world.refused(verb, world.conf(verb, nodename=node), cni_env("c1"), {7}, mentions="node name")


@FUZZ
@given(
    endpoints=st.one_of(
        st.sampled_from([
            "198.19.0.1:2379", "ftp://198.19.0.1:2379", "http://", "http://a b:1", "http://h:99999", "http://h:0",
            ",,,", " , ", "http://[zz]:1", "unix:///var/run/etcd.sock", "http://h:1,ftp://x",
        ]),
        st.text(max_size=30).filter(lambda s: "://" not in s and s.strip(" ,") != ""),
    ),
    verb=st.sampled_from(VERBS),
)
def test_malformed_etcd_endpoints(world, endpoints, verb):
    world.refused(verb, world.conf(verb, etcd_endpoints=endpoints), cni_env("c1"), {7}, mentions="etcd endpoint")


@FUZZ
@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=24), verb=st.sampled_from(VERBS))
def test_credentials_in_endpoint_are_never_echoed(world, secret, verb):
    config = world.conf(verb, etcd_endpoints=f"http://calico:{secret}@198.19.0.1:2379")
    # Only what this run appends to the shared log counts: other examples log numbers that a
    # secret like "000000000000" can occur in.
    before = os.path.getsize(world.log_path) if os.path.exists(world.log_path) else 0
    obj = world.refused(verb, config, cni_env("c1"), {7}, mentions="credentials")
    assert secret not in json.dumps(obj)
    with open(world.log_path) as f:
        f.seek(before)
        assert secret not in f.read()


@FUZZ
@given(
    ips=st.one_of(
        json_values.filter(lambda v: v is not None and not isinstance(v, list)),
        st.lists(json_values.filter(lambda v: not isinstance(v, str)), min_size=1, max_size=3),
        st.lists(st.text(max_size=20).filter(lambda s: not _parses_as_ip(s)), min_size=1, max_size=2),
        st.just(["198.18.0.5", "198.18.0.6"]),
    )
)
def test_hostile_runtime_config_ips(world, ips):
    world.refused("ADD", world.conf(runtimeConfig={"ips": ips}), cni_env("c1"), {7})


def _parses_as_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_interface(text.strip())
        return True
    except ValueError:
        return False


@FUZZ
@given(prev_ips=json_values.filter(lambda v: v is not None and not (isinstance(v, list) and all(isinstance(e, dict) for e in v))))
def test_hostile_prev_result_in_check(world, prev_ips):
    config = world.conf("CHECK", prevResult={"cniVersion": "1.0.0", "ips": prev_ips})
    world.refused("CHECK", config, cni_env("keep"), {7})


@FUZZ
@given(
    top=st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN_TOP), json_values, min_size=1, max_size=4),
    inner=st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN_IPAM | {"type"}), json_values, max_size=3),
)
def test_unknown_keys_are_ignored(world, top, inner):
    """The spec lets plugins ignore keys they do not know: ADD and DEL work as without them."""
    config = world.conf()
    config.update(top)
    config["ipam"].update(inner)
    rc, out, err = world.invoke("ADD", config, cni_env("unknown"))
    assert rc == 0, out + err
    assert json.loads(out)["ips"][0]["address"].startswith("198.18.0.")
    rc, out, err = world.invoke("DEL", config, cni_env("unknown"))
    assert rc == 0 and out == "", out + err
    assert world.store.handle("net1.unknown") is None


# -- stdin ---------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=200), verb=st.sampled_from(VERBS))
@example(data=b"", verb="ADD")
@example(data=b"\xff\xfe{", verb="DEL")
@example(data=b"[" * 100_000, verb="ADD")
@example(data=b'{"cniVersion": "1.0.0", "name": "net1"' + b" " * 10, verb="ADD")
def test_malformed_stdin(world, data, verb):
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        decoded = ...
    if isinstance(decoded, dict):
        return  # an object; covered by the key tests
    world.refused(verb, data, cni_env("c1"), {6} if decoded is ... else {7})


@FUZZ
@given(value=json_values.filter(lambda v: not isinstance(v, dict)), verb=st.sampled_from(VERBS))
def test_stdin_json_that_is_not_an_object(world, value, verb):
    world.refused(verb, json.dumps(value).encode(), cni_env("c1"), {7}, mentions="JSON object")


def test_huge_stdin_in_process(world):
    config = world.conf()
    config["padding"] = "x" * MAX_STDIN
    world.refused("ADD", json.dumps(config).encode(), cni_env("c1"), {6}, mentions="too large")


def test_large_but_acceptable_stdin_is_fine(world):
    config = world.conf()
    config["padding"] = "x" * (MAX_STDIN // 2)
    rc, out, err = world.invoke("DEL", config, cni_env("c1"))
    assert rc == 0, out + err


# -- environment ---------------------------------------------------------------------------------

bad_ifnames = st.one_of(
    st.sampled_from([".", "..", "eth/0", "../eth0", "eth:0", "eth 0", "eth0\n", "a" * 16, "\t", "ééééééééé", "/"]),
    st.text(min_size=1, max_size=30).filter(
        lambda s: len(s.encode("utf-8", "surrogatepass")) > 15 or any(c in s for c in "/:") or any(c.isspace() for c in s)
    ),
)
bad_container_ids = st.one_of(
    st.sampled_from(["../c1", "c1/../../x", "/", "..", "c 1", "c1\n", "-c1", "a" * 1025, "c1;rm -rf /", "ç1"]),
    st.text(min_size=1, max_size=40).filter(lambda s: not NAME_RE.fullmatch(s)),
)


@FUZZ
@given(ifname=bad_ifnames, verb=st.sampled_from(VERBS))
def test_hostile_ifname(world, ifname, verb):
    world.refused(verb, world.conf(verb), cni_env("keep", ifname=ifname), {4}, mentions="CNI_IFNAME")


@FUZZ
@given(cid=bad_container_ids, verb=st.sampled_from(VERBS))
def test_hostile_container_id(world, cid, verb):
    world.refused(verb, world.conf(verb), cni_env(cid), {4}, mentions="CNI_CONTAINERID")


@FUZZ
@given(
    verb=st.sampled_from(VERBS),
    missing=st.sampled_from(["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_NETNS"]),
    empty=st.booleans(),
)
def test_missing_environment(world, verb, missing, empty):
    if verb == "DEL" and missing == "CNI_NETNS":
        return  # DEL may come without a netns
    env = cni_env("keep")
    if empty:
        env[missing] = ""
    else:
        del env[missing]
    world.refused(verb, world.conf(verb), env, {4}, mentions=missing)


@FUZZ
@given(command=st.text(max_size=12).filter(lambda c: c not in ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")))
def test_unknown_command(world, command):
    world.refused(command, world.conf(), cni_env("keep"), {4}, mentions="CNI_COMMAND")


cni_args_garbage = st.one_of(
    # pairs without '=' or without a key
    st.text(alphabet="abcXYZ019;_-", min_size=1, max_size=20).filter(lambda s: any(p and ("=" not in p) for p in s.split(";"))),
    st.sampled_from(["=v", "IP", ";=;", "K8S_POD_NAME"]),
    # unknown keys without IgnoreUnknown
    st.from_regex(r"\A[A-Z]{1,8}=[a-z]{0,5}\Z").filter(lambda s: s.split("=")[0] not in ("IP", "IgnoreUnknown")),
    # Kubernetes names that are not names
    st.sampled_from(["IgnoreUnknown=1;K8S_POD_NAMESPACE=../x;K8S_POD_NAME=p", "K8S_POD_NAME=a/b", "K8S_POD_NAMESPACE=a b",
                     "K8S_POD_NAME=" + "a" * 254]),
)


@FUZZ
@given(args=cni_args_garbage, verb=st.sampled_from(VERBS))
def test_cni_args_garbage(world, args, verb):
    world.refused(verb, world.conf(verb), cni_env("keep", CNI_ARGS=args), {4}, mentions="CNI_ARGS")


@FUZZ
@given(ip=st.one_of(st.text(min_size=1, max_size=30).filter(lambda s: "," not in s and ";" not in s and s.strip() and not _parses_as_ip(s)),
                    st.sampled_from(["198.18.0.1.1", "300.1.1.1", "198.18.0.1/33", "::g", "198.18.0.1,198.18.0.2", "fe80::1%eth0"])))
def test_cni_args_ip_garbage(world, ip):
    world.refused("ADD", world.conf(), cni_env("c1", CNI_ARGS=f"IgnoreUnknown=1;IP={ip}"), {4, 7}, mentions="IP")


def test_cni_args_ip_garbage_does_not_block_del(world):
    """DEL must succeed with the CNI_ARGS of an ADD that failed on them."""
    rc, out, err = world.invoke("DEL", world.conf(), cni_env("c1", CNI_ARGS="IgnoreUnknown=1;IP=not-an-ip"))
    assert rc == 0, out + err


@FUZZ
@given(ip=st.one_of(st.ip_addresses(v=4).filter(lambda a: not str(a).startswith("198.18.0.")),
                    st.ip_addresses(v=6)))
def test_ip_outside_every_pool(world, ip):
    obj = world.refused("ADD", world.conf(assign_ipv6="true"), cni_env("c1", CNI_ARGS=f"IP={ip}"), {101})
    assert obj["msg"] == "The provided IP address is not in a configured pool", obj


def test_ip_outside_every_pool_on_a_new_node_writes_nothing(world):
    """Even on a node's very first ADD, a refused address leaves etcd as it was."""
    world.refused("ADD", world.conf(nodename="brand-new-node"), cni_env("c9", CNI_ARGS="IP=203.0.113.7"), {101})


def test_the_kept_attachment_survived(world):
    """The state every example compared against was real: the kept address is still held."""
    rc, out, err = world.invoke("CHECK", world.conf("CHECK", prevResult=world.kept), cni_env("keep"))
    assert rc == 0 and out == "", out + err


# -- the installed executable --------------------------------------------------------------------


def _exec_refused(world, verb, config, env, code, mentions=None):
    before = snapshot(world.store.client)
    result = run_plugin("calico-ipam", verb, config, env, timeout=60)
    obj = cni_error(result, code)
    if mentions:
        assert mentions.lower() in (obj["msg"] + " " + obj.get("details", "")).lower(), obj
    assert snapshot(world.store.client) == before
    return obj


EXEC_CASES = [
    ("garbage stdin", "ADD", b"\x00\x01not json", {}, 6, None),
    ("huge stdin", "ADD", b"{" + b" " * (MAX_STDIN + 10) + b"}", {}, 6, "too large"),
    ("deep nesting", "ADD", b"[" * 200_000, {}, 6, None),
    ("invalid utf-8", "DEL", b'{"cniVersion": "1.0.0", "name": "\xff"}', {}, 6, None),
    ("array stdin", "CHECK", b"[1, 2]", {}, 7, None),
    ("no cniVersion", "ADD", b'{"name": "net1", "type": "calico-ipam", "ipam": {"type": "calico-ipam"}}', {}, 1, "cniVersion"),
    ("cniVersion number", "ADD", {"cniVersion": 1.0}, {}, 7, "cniVersion"),
    ("nan timeout", "ADD", '"etcd_timeout": NaN', {}, 7, "etcd_timeout"),
    ("ipam list", "DEL", {"ipam": ["calico-ipam"]}, {}, 7, "ipam"),
    ("ipam.type path", "ADD", {"ipam": {"type": "../../usr/bin/calico-ipam"}}, {}, 7, "ipam.type"),
    ("password number", "ADD", {"etcd_password": 31337}, {}, 7, "etcd_password"),
    ("nodename traversal", "ADD", {"nodename": "../../etc"}, {}, 7, "node name"),
    ("log count infinite", "ADD", '"log_file_max_count": 1e999', {}, 7, "log_file_max_count"),
    ("runtimeConfig string", "ADD", {"runtimeConfig": "ips"}, {}, 7, "runtimeConfig"),
    ("prevResult list", "CHECK", {"prevResult": []}, {}, 7, "prevResult"),
    ("ifname slash", "ADD", {}, {"CNI_IFNAME": "../eth0"}, 4, "CNI_IFNAME"),
    ("ifname too long", "DEL", {}, {"CNI_IFNAME": "e" * 16}, 4, "CNI_IFNAME"),
    ("container id slash", "ADD", {}, {"CNI_CONTAINERID": "../../c1"}, 4, "CNI_CONTAINERID"),
    ("container id 2 KiB", "DEL", {}, {"CNI_CONTAINERID": "c" * 2048}, 4, "CNI_CONTAINERID"),
    ("CNI_ARGS no '='", "ADD", {}, {"CNI_ARGS": "garbage;;x"}, 4, "CNI_ARGS"),
    ("CNI_ARGS unknown key", "DEL", {}, {"CNI_ARGS": "FOO=bar"}, 4, "CNI_ARGS"),
    ("IP garbage", "ADD", {}, {"CNI_ARGS": "IP=999.1.1.1"}, 4, "IP"),
    ("IP outside pools", "ADD", {}, {"CNI_ARGS": "IP=203.0.113.9"}, 101, "not in a configured pool"),
    ("unknown command", "FROB", {}, {}, 4, "CNI_COMMAND"),
]


@pytest.mark.parametrize("label,verb,patch,env,code,mentions", EXEC_CASES, ids=[c[0] for c in EXEC_CASES])
def test_installed_executable_refuses(world, label, verb, patch, env, code, mentions):
    """patch: a dict merged into a valid config, raw stdin bytes, or a str spliced in as JSON members."""
    assert (BIN_DIR / "calico-ipam").exists()
    if isinstance(patch, dict):
        config = world.conf("CHECK" if verb == "CHECK" else "ADD")
        config.update(patch)
        stdin = json.dumps(config).encode()
    elif isinstance(patch, str):
        # a member the JSON encoder cannot produce (NaN, 1e999), spliced into a valid config
        stdin = (json.dumps(world.conf())[:-1] + ", " + patch + "}").encode()
    else:
        stdin = patch
    env = {"CNI_CONTAINERID": "x" + str(EXEC_CASES.index(next(c for c in EXEC_CASES if c[0] == label))), **env}
    _exec_refused(world, verb, stdin, cni_env(**env), code, mentions)


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=wrong_typed(), verb=st.sampled_from(VERBS))
def test_installed_executable_wrong_types_sample(world, case, verb):
    path, value, word = case
    config = with_value(world.conf(verb), path, value)
    code = 1 if path == ("cniVersion",) and isinstance(value, str) else 7
    _exec_refused(world, verb, json.dumps(config).encode(), cni_env("c1"), code, word.split(".")[-1])


def test_installed_executable_accepts_unknown_keys(world):
    config = world.conf()
    config.update({"bogus": {"nested": [1, None]}, "cni.dev/whatever": True})
    config["ipam"]["bogus"] = 5
    out = succeeded(run_plugin("calico-ipam", "ADD", config, cni_env("unk"), timeout=60))
    assert out["ips"]
    succeeded(run_plugin("calico-ipam", "DEL", config, cni_env("unk"), timeout=60))
    assert world.store.handle("net1.unk") is None
