"""The CNI protocol layer, pure (no etcd, no namespaces, no exec): environment and stdin
validation, CNI_ARGS, VERSION, result conversion, the runner and the config keys. The installed
`calico-ipam` executable's protocol behaviour is tested in tests/etcd/test_protocol.py.
"""

from __future__ import annotations

import io
import json

import pytest

from calico_cni import config as cfg
from calico_cni.errors import CalicoError
from calico_cni.plugins.errors import cni_error
from calico_cni.protocol import errors
from calico_cni.protocol.errors import CniError
from calico_cni.protocol.gc import VALID_ATTACHMENTS, valid_attachments
from calico_cni.protocol.request import (
    CniRequest,
    decode_config,
    parse_cni_args,
    parse_command,
    parse_request,
)
from calico_cni.protocol.result import convert, normalize
from calico_cni.protocol.runner import run
from calico_cni.protocol.versions import SUPPORTED_VERSIONS, at_least, require_supported, version_info, version_key
from tests.cni_requests import ALL_VERSIONS, ATTACH_VARS, env, one_json_object

LEGACY_VERSIONS = ["0.3.0", "0.3.1", "0.4.0"]


def conf(version: str = "1.0.0", **extra) -> dict:
    out = {"cniVersion": version, "name": "net1", "type": "calico-ipam", "ipam": {"type": "calico-ipam"}}
    out.update(extra)
    return out


def stdin(config) -> bytes:
    return json.dumps(config).encode()


def raises(code: int, fn, *args, **kwargs) -> CniError:
    """The CNI error `fn` fails with: its own, or a lower floor's exception as the runner reports it."""
    with pytest.raises((CniError, CalicoError)) as info:
        fn(*args, **kwargs)
    err = cni_error(info.value)
    assert err is not None and err.code == code, f"expected code {code}, got {info.value!r}: {info.value}"
    return err


def request(command: str = "ADD", config=None, **env_overrides) -> CniRequest:
    return parse_request(command, env(command, **env_overrides), stdin(conf() if config is None else config))


# ------------------------------------------------------------------------------------------------
# CNI_COMMAND


@pytest.mark.parametrize("environ", [{}, {"CNI_COMMAND": ""}])
def test_missing_command_is_error_4_naming_the_variable(environ):
    err = raises(errors.INVALID_ENVIRONMENT, parse_command, environ)
    assert "CNI_COMMAND" in err.msg


@pytest.mark.parametrize("value", ["add", "Add", "FOO", "ADD ", " DEL", "GARBAGE COLLECT", "VERSIONS"])
def test_unknown_command_is_error_4_naming_it(value):
    err = raises(errors.INVALID_ENVIRONMENT, parse_command, {"CNI_COMMAND": value})
    assert "CNI_COMMAND" in err.msg
    assert repr(value) in err.msg
    # The details list what is accepted.
    for verb in ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"):
        assert verb in err.details


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"])
def test_every_verb_is_accepted(verb):
    assert parse_command({"CNI_COMMAND": verb}) == verb


# ------------------------------------------------------------------------------------------------
# Required variables per verb


@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
@pytest.mark.parametrize("var", ATTACH_VARS)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_add_and_check_need_every_attachment_variable(verb, var, how):
    config = conf("1.0.0", prevResult={"cniVersion": "1.0.0", "ips": []})
    environ = env(verb, **{var: None if how == "absent" else ""})
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, verb, environ, stdin(config))
    assert var in err.msg
    # Only the missing variable is named.
    for other in ATTACH_VARS:
        if other != var:
            assert other not in err.msg


@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])
def test_del_needs_containerid_ifname_and_path(var):
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, "DEL", env("DEL", **{var: None}), stdin(conf()))
    assert var in err.msg


def test_missing_variables_are_all_named():
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, "ADD", env("ADD", CNI_CONTAINERID=None, CNI_PATH=""), stdin(conf()))
    assert "CNI_CONTAINERID" in err.msg and "CNI_PATH" in err.msg
    assert "CNI_NETNS" not in err.msg and "CNI_IFNAME" not in err.msg


@pytest.mark.parametrize("netns", [None, ""])
def test_del_without_netns_is_fine(netns):
    req = parse_request("DEL", env("DEL", CNI_NETNS=netns), stdin(conf()))
    assert req.command == "DEL"
    assert req.netns == ""
    assert req.container_id == "c1" and req.ifname == "eth0"


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
def test_gc_and_status_need_no_attachment_variables(verb):
    environ = {"CNI_COMMAND": verb}
    req = parse_request(verb, environ, stdin(conf("1.1.0")))
    assert req.command == verb
    assert req.container_id == "" and req.netns == "" and req.ifname == "" and req.cni_path == []


def test_request_fields():
    environ = env("ADD", CNI_PATH="/a::/b:", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod")
    config = conf("0.4.0", runtimeConfig={"ips": ["198.18.0.5"]}, prevResult={"ips": []})
    req = parse_request("ADD", environ, stdin(config))
    assert req.cni_version == "0.4.0"
    assert req.network == "net1"
    assert req.container_id == "c1"
    assert req.netns == "/var/run/netns/x"
    assert req.ifname == "eth0"
    assert req.cni_path == ["/a", "/b"]
    assert req.args == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "pod"}
    assert req.k8s_pod == ("ns", "pod")
    assert req.runtime_config == {"ips": ["198.18.0.5"]}
    assert req.prev_result == {"ips": []}
    assert req.config == config
    assert req.stdin == stdin(config)


def test_request_defaults_without_optional_parts():
    req = request("ADD", CNI_ARGS="K8S_POD_NAME=pod")
    assert req.k8s_pod is None  # the namespace is missing
    assert req.runtime_config == {}
    assert req.prev_result is None


# ------------------------------------------------------------------------------------------------
# VERSION


def run_captured(handlers, environ, data: bytes = b"", setup=None, translate=None) -> tuple[int, str]:
    out = io.StringIO()
    rc = run(handlers, "test-plugin", environ=environ, stdin=data, stdout=out, setup=setup, translate=translate)
    return rc, out.getvalue()


def test_version_info():
    assert version_info() == {"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS}
    assert list(SUPPORTED_VERSIONS) == ALL_VERSIONS


def test_version_validates_nothing_podman_probe():
    """podman probes with an empty CNI_CONTAINERID and CNI_NETNS=dummy (and no CNI_IFNAME)."""
    environ = {"CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "", "CNI_NETNS": "dummy", "CNI_ARGS": "garbage;Foo=1", "CNI_IFNAME": "a/b:c d"}
    called = []
    rc, out = run_captured({"ADD": lambda r: called.append(r)}, environ, b"this is not json")
    assert rc == 0
    assert one_json_object(out) == {"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS}
    assert called == []


def test_version_with_only_the_command():
    rc, out = run_captured({}, {"CNI_COMMAND": "VERSION"})
    assert rc == 0
    assert one_json_object(out)["supportedVersions"] == ALL_VERSIONS


# ------------------------------------------------------------------------------------------------
# Container ID and interface name


def refused_by_attachment_verbs(variable: str, value: str) -> None:
    """ADD, DEL and CHECK each refuse `value` of `variable` with error 4 naming the variable."""
    for verb in ("ADD", "DEL", "CHECK"):
        config = conf("1.0.0", prevResult={"ips": []})
        err = raises(errors.INVALID_ENVIRONMENT, parse_request, verb, env(verb, **{variable: value}), stdin(config))
        assert variable in err.msg


@pytest.mark.parametrize(
    "cid",
    [
        "a" * 1025,  # too long
        "a/b",
        "a:b",
        ".",
        "..",
        ".abc",
        "-abc",
        "_abc",
        "a b",
        "a\tb",
        " abc",
        "abc ",
        "a\nb",
        "é",
        "a;b",
    ],
)
def test_bad_container_id_is_error_4(cid):
    refused_by_attachment_verbs("CNI_CONTAINERID", cid)


def test_container_id_with_trailing_newline_is_error_4():
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, "ADD", env("ADD", CNI_CONTAINERID="abc\n"), stdin(conf()))
    assert "CNI_CONTAINERID" in err.msg


@pytest.mark.parametrize("cid", ["a", "A1", "0abc", "cnitool-77383ca0a0715733ca6f", "a.b_c-d", "a" * 1024, "net.with.dots"])
def test_good_container_ids(cid):
    assert request("ADD", CNI_CONTAINERID=cid).container_id == cid


@pytest.mark.parametrize(
    "ifname",
    [
        "a" * 16,  # too long
        "abcdefghijklmnopq",
        ".",
        "..",
        "eth/0",
        "/",
        "eth:0",
        "eth 0",
        " eth0",
        "eth0 ",
        "eth\t0",
        "eth\n0",
        "eth0\n",
        "eth\u00a00",
    ],
)
def test_bad_ifname_is_error_4(ifname):
    refused_by_attachment_verbs("CNI_IFNAME", ifname)


def test_ifname_limit_counts_bytes():
    ifname = "é" * 9
    assert len(ifname.encode()) == 18
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, "ADD", env("ADD", CNI_IFNAME=ifname), stdin(conf()))
    assert "CNI_IFNAME" in err.msg


@pytest.mark.parametrize("ifname", ["e", "eth0", "a" * 15, "net1.100", "eth-0_1", "...", ".a"])
def test_good_ifnames(ifname):
    assert request("ADD", CNI_IFNAME=ifname).ifname == ifname


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
def test_gc_status_validate_ifname_when_given(verb):
    raises(errors.INVALID_ENVIRONMENT, parse_request, verb, {"CNI_COMMAND": verb, "CNI_IFNAME": "a/b"}, stdin(conf("1.1.0")))
    raises(errors.INVALID_ENVIRONMENT, parse_request, verb, {"CNI_COMMAND": verb, "CNI_CONTAINERID": "-x"}, stdin(conf("1.1.0")))


def test_environment_is_checked_before_stdin():
    """A bad environment is reported as such even when stdin is garbage too."""
    raises(errors.INVALID_ENVIRONMENT, parse_request, "ADD", env("ADD", CNI_IFNAME=None), b"{{{")


# ------------------------------------------------------------------------------------------------
# stdin


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"{'cniVersion': '1.0.0'}",
        b'{"cniVersion": "1.0.0",}',
        b"\xff\xfe\x00garbage",
        b'{"name": "\xff"}',
        b'{"a": 1} {"b": 2}',
        b"[" * 100000 + b"]" * 100000,
        b" " * (4 * 1024 * 1024 + 1),
    ],
    ids=["empty", "blank", "truncated", "single-quotes", "trailing-comma", "binary", "bad-utf8", "two-objects", "deep", "too-large"],
)
def test_undecodable_stdin_is_error_6(data):
    raises(errors.DECODE_FAILURE, decode_config, data)
    raises(errors.DECODE_FAILURE, parse_request, "ADD", env("ADD"), data)


@pytest.mark.parametrize("data", [b"[]", b'["cniVersion"]', b"1", b'"1.0.0"', b"null", b"true"])
def test_non_object_json_is_error_7(data):
    err = raises(errors.INVALID_CONFIG, decode_config, data)
    assert "object" in err.msg
    raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), data)


def test_missing_cni_version_is_error_1():
    config = conf()
    del config["cniVersion"]
    err = raises(errors.INCOMPATIBLE_VERSION, parse_request, "ADD", env("ADD"), stdin(config))
    assert "cniVersion" in err.msg


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3", "1.0", "1", "2.0.0", "1.2.0", "", "v1.0.0", "1.0.0 ", "latest"])
def test_unsupported_cni_version_is_error_1(version):
    err = raises(errors.INCOMPATIBLE_VERSION, parse_request, "ADD", env("ADD"), stdin(conf(version)))
    assert repr(version) in err.msg
    for v in ALL_VERSIONS:
        assert v in err.details


@pytest.mark.parametrize("version", [1.0, 1, None, ["1.0.0"], {"v": "1.0.0"}])
def test_non_string_cni_version_is_error_7(version):
    err = raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), stdin(conf(version)))
    assert "cniVersion" in err.msg


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_supported_version_parses(version):
    assert request("ADD", conf(version)).cni_version == version


@pytest.mark.parametrize("key", ["name", "type"])
@pytest.mark.parametrize("value", [None, "", 5, ["x"]])
def test_name_and_type_must_be_strings(key, value):
    config = conf()
    if value is None:
        del config[key]
    else:
        config[key] = value
    err = raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), stdin(config))
    assert repr(key) in err.msg


@pytest.mark.parametrize("name", ["-net", ".net", "net/1", "net 1", "net:1", "nét"])
def test_bad_network_name_is_error_7(name):
    err = raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), stdin(conf(name=name)))
    assert "network name" in err.msg


def test_network_name_with_trailing_newline_is_error_7():
    raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), stdin(conf(name="net1\n")))


@pytest.mark.parametrize("key", ["prevResult", "runtimeConfig"])
@pytest.mark.parametrize("value", [[], "x", 1, None])
def test_prev_result_and_runtime_config_must_be_objects(key, value):
    err = raises(errors.INVALID_CONFIG, parse_request, "ADD", env("ADD"), stdin(conf(**{key: value})))
    assert key in err.msg


# ------------------------------------------------------------------------------------------------
# Verbs and versions


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_check_below_0_4_0_is_error_1(version):
    config = conf(version, prevResult={"cniVersion": version, "ips": []})
    err = raises(errors.INCOMPATIBLE_VERSION, parse_request, "CHECK", env("CHECK"), stdin(config))
    assert "CHECK" in err.msg and version in err.msg


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_from_0_4_0(version):
    req = parse_request("CHECK", env("CHECK"), stdin(conf(version, prevResult={"ips": []})))
    assert req.prev_result == {"ips": []}


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_without_prev_result_is_error_7(version):
    err = raises(errors.INVALID_CONFIG, parse_request, "CHECK", env("CHECK"), stdin(conf(version)))
    assert "prevResult" in err.msg


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_gc_and_status_below_1_1_0_are_error_1(verb, version):
    err = raises(errors.INCOMPATIBLE_VERSION, parse_request, verb, {"CNI_COMMAND": verb}, stdin(conf(version)))
    assert verb in err.msg and "1.1.0" in err.details


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_add_and_del_accept_every_version(verb, version):
    assert parse_request(verb, env(verb), stdin(conf(version))).cni_version == version


def test_version_helpers():
    assert version_key("1.0.0") == (1, 0, 0)
    assert version_key("1.1") == (1, 1, 0)
    assert version_key("0") == (0, 0, 0)
    for bad in ("", "1.0.0.0", "a.b.c", "1..0", "-1.0.0"):
        with pytest.raises(ValueError):
            version_key(bad)
    assert at_least("0.4.0", "0.4.0") and at_least("1.0.0", "0.4.0") and at_least("0.10.0", "0.4.0")
    assert not at_least("0.3.1", "0.4.0")
    for v in ALL_VERSIONS:
        require_supported(v)
    raises(errors.INCOMPATIBLE_VERSION, require_supported, "0.2.0")


# ------------------------------------------------------------------------------------------------
# CNI_ARGS


def test_cni_args_empty():
    assert parse_cni_args("") == {}


def test_cni_args_known_keys():
    assert parse_cni_args("IP=198.18.0.5;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns") == {
        "IP": "198.18.0.5",
        "K8S_POD_NAME": "p",
        "K8S_POD_NAMESPACE": "ns",
    }


def test_cni_args_kubelet_form():
    raw = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
    args = parse_cni_args(raw)
    assert args["K8S_POD_NAME"] == "web-0" and args["K8S_POD_UID"] == "u-1"


def test_cni_args_podman_form_with_unknown_key():
    args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;PODMAN_THING=x")
    assert args["K8S_POD_NAME"] == "web"
    assert args["PODMAN_THING"] == "x"


@pytest.mark.parametrize("flag", ["1", "true", "True", "TRUE"])
def test_ignore_unknown_values(flag):
    assert parse_cni_args(f"Foo=bar;IgnoreUnknown={flag}")["Foo"] == "bar"


@pytest.mark.parametrize("raw", ["Foo=bar", "IgnoreUnknown=0;Foo=bar", "IgnoreUnknown=false;Foo=bar", "IgnoreUnknown=;Foo=bar", "ip=1.2.3.4"])
def test_unknown_key_without_ignore_unknown_is_error_4(raw):
    err = raises(errors.INVALID_ENVIRONMENT, parse_cni_args, raw)
    assert "CNI_ARGS" in err.msg
    key = raw.split(";")[-1].split("=")[0]
    assert key in err.msg
    assert "IgnoreUnknown" in err.details


def test_all_unknown_keys_are_named():
    err = raises(errors.INVALID_ENVIRONMENT, parse_cni_args, "Zed=1;Alpha=2;IP=1.2.3.4")
    assert "Alpha" in err.msg and "Zed" in err.msg and "IP" not in err.msg.replace("CNI_ARGS", "")


@pytest.mark.parametrize("raw", ["foo", "IgnoreUnknown", "=bar", "IP=1.2.3.4;garbage", "IgnoreUnknown=1;=x", "IgnoreUnknown=1;novalue"])
def test_garbage_pairs_are_error_4(raw):
    err = raises(errors.INVALID_ENVIRONMENT, parse_cni_args, raw)
    assert "CNI_ARGS" in err.msg


def test_cni_args_tolerates_empty_pairs_and_keeps_empty_values():
    assert parse_cni_args(";IP=1.2.3.4;;") == {"IP": "1.2.3.4"}
    assert parse_cni_args("K8S_POD_NAME=") == {"K8S_POD_NAME": ""}


def test_cni_args_value_may_contain_equals():
    assert parse_cni_args("IgnoreUnknown=1;X=a=b")["X"] == "a=b"


def test_bad_cni_args_through_parse_request():
    err = raises(errors.INVALID_ENVIRONMENT, parse_request, "ADD", env("ADD", CNI_ARGS="Unknown=1"), stdin(conf()))
    assert "Unknown" in err.msg
    raises(errors.INVALID_ENVIRONMENT, parse_request, "DEL", env("DEL", CNI_ARGS="junk"), stdin(conf()))


# ------------------------------------------------------------------------------------------------
# GC's cni.dev/valid-attachments (protocol.gc)


def test_valid_attachments_are_read_as_container_and_ifname_pairs():
    live = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2"}, {"containerID": "c3", "ifname": ""}]
    assert valid_attachments({VALID_ATTACHMENTS: live}) == [("c1", "eth0"), ("c2", None), ("c3", "")]
    assert valid_attachments({VALID_ATTACHMENTS: []}) == []


@pytest.mark.parametrize(
    "config",
    [
        {},  # absent: a GC without it would release everything
        {VALID_ATTACHMENTS: None},
        {VALID_ATTACHMENTS: {"containerID": "c1"}},  # not a list
        {VALID_ATTACHMENTS: ["c1"]},  # an item that is not an object
        {VALID_ATTACHMENTS: [{"ifname": "eth0"}]},  # no containerID
        {VALID_ATTACHMENTS: [{"containerID": 1}]},
        {VALID_ATTACHMENTS: [{"containerID": "c1"}, {"containerID": "c2", "ifname": 0}]},
    ],
)
def test_malformed_valid_attachments_are_error_7(config):
    with pytest.raises(CniError) as info:
        valid_attachments(config)
    assert info.value.code == errors.INVALID_CONFIG and VALID_ATTACHMENTS in info.value.msg


# ------------------------------------------------------------------------------------------------
# Results


def ipam_result_v1() -> dict:
    return {
        "ips": [{"address": "198.18.0.5/26"}, {"address": "fd00:198:18::5/122"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["198.19.0.53"]},
    }


def full_result_v1() -> dict:
    return {
        "interfaces": [
            {"name": "cali123", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450},
            {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/var/run/netns/x", "socketPath": "/s", "pciID": "0000:00:01.0"},
        ],
        "ips": [{"interface": 1, "address": "198.18.0.5/32"}, {"interface": 1, "address": "fd00:198:18::5/128"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {},
    }


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_convert_legacy_versions_add_ip_version(version):
    out = convert(ipam_result_v1(), version)
    assert out["cniVersion"] == version
    assert out["ips"] == [
        {"version": "4", "address": "198.18.0.5/26"},
        {"version": "6", "address": "fd00:198:18::5/122"},
    ]
    assert out["routes"] == [{"dst": "0.0.0.0/0"}]
    assert out["dns"] == {"nameservers": ["198.19.0.53"]}
    assert "interfaces" not in out


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_convert_1x_has_no_ip_version(version):
    src = ipam_result_v1()
    src["ips"][0]["version"] = "4"  # a stray version key is dropped too
    out = convert(src, version)
    assert out["cniVersion"] == version
    assert out["ips"] == [{"address": "198.18.0.5/26"}, {"address": "fd00:198:18::5/122"}]
    for entry in out["ips"]:
        assert "version" not in entry


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_convert_interface_extras_only_in_1_1_0(version):
    out = convert(full_result_v1(), version)
    keys = set().union(*(iface.keys() for iface in out["interfaces"]))
    if version == "1.1.0":
        assert out["interfaces"] == full_result_v1()["interfaces"]
    else:
        assert keys.isdisjoint({"mtu", "socketPath", "pciID"}), keys
        assert out["interfaces"][1] == {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/x"}
    assert [e["interface"] for e in out["ips"]] == [1, 1]
    assert ("version" in out["ips"][0]) == (version in LEGACY_VERSIONS)


def test_convert_does_not_modify_its_input():
    src = full_result_v1()
    before = json.loads(json.dumps(src))
    convert(src, "0.3.1")
    convert(src, "1.0.0")
    assert src == before


def test_convert_defaults_and_extra_keys():
    out = convert({"ips": [], "custom": {"x": 1}}, "1.0.0")
    assert out == {"cniVersion": "1.0.0", "ips": [], "dns": {}, "custom": {"x": 1}}
    assert convert({}, "0.4.0") == {"cniVersion": "0.4.0", "ips": [], "dns": {}}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_normalize_then_convert_round_trip(version):
    legacy = convert(full_result_v1(), version)
    back = normalize(legacy)
    assert "cniVersion" not in back
    for entry in back["ips"]:
        assert "version" not in entry
    assert convert(back, version) == legacy


def test_normalize_keeps_everything_else():
    src = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "198.18.0.5/32", "gateway": "198.18.0.1", "interface": 0}], "dns": {"search": ["x"]}, "other": 1}
    assert normalize(src) == {"ips": [{"address": "198.18.0.5/32", "gateway": "198.18.0.1", "interface": 0}], "dns": {"search": ["x"]}, "other": 1}
    assert normalize({}) == {"ips": []}


@pytest.mark.parametrize(
    "result",
    [
        [],
        "x",
        None,
        {"ips": [{"address": "not-an-ip/24"}]},
        {"ips": [{"address": 5}]},
        {"ips": [{"gateway": "198.18.0.1"}]},
        {"ips": ["198.18.0.5/32"]},
        {"ips": [{"address": "198.18.0.5/33"}]},
        {"interfaces": {"name": "eth0"}},
        {"interfaces": "eth0"},
        {"routes": {"dst": "0.0.0.0/0"}},
    ],
)
def test_normalize_rejects_unusable_results_with_error_7(result):
    raises(errors.INVALID_CONFIG, normalize, result)


@pytest.mark.parametrize("ips", [5, True, 1.5])
def test_normalize_non_list_ips_is_error_7(ips):
    raises(errors.INVALID_CONFIG, normalize, {"ips": ips})


def test_normalize_non_object_interface_is_error_7():
    raises(errors.INVALID_CONFIG, normalize, {"interfaces": [1], "ips": []})


# ------------------------------------------------------------------------------------------------
# Runner


def boom(request):
    raise RuntimeError("kaboom in handler")


def test_runner_prints_the_handler_result():
    rc, out = run_captured({"ADD": lambda r: {"cniVersion": r.cni_version, "ips": []}}, env("ADD"), stdin(conf("0.4.0")))
    assert rc == 0
    assert one_json_object(out) == {"cniVersion": "0.4.0", "ips": []}


def test_runner_prints_nothing_when_handler_returns_none():
    rc, out = run_captured({"DEL": lambda r: None}, env("DEL"), stdin(conf()))
    assert (rc, out) == (0, "")


def test_runner_verb_without_handler_succeeds_silently():
    rc, out = run_captured({"ADD": boom}, {"CNI_COMMAND": "STATUS"}, stdin(conf("1.1.0")))
    assert (rc, out) == (0, "")


def test_runner_passes_the_parsed_request_and_calls_setup_first():
    calls = []
    handlers = {"ADD": lambda r: calls.append(("handler", r.container_id, r.ifname)) or {"ok": True}}
    rc, out = run_captured(handlers, env("ADD"), stdin(conf()), setup=lambda r: calls.append(("setup", r.command)))
    assert rc == 0
    assert calls == [("setup", "ADD"), ("handler", "c1", "eth0")]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_runner_unexpected_exception_is_code_100(version, capsys):
    rc, out = run_captured({"ADD": boom}, env("ADD"), stdin(conf(version)))
    assert rc == 1
    obj = one_json_object(out)
    assert obj["code"] == 100
    assert obj["cniVersion"] == version
    assert "RuntimeError" in obj["msg"] and "kaboom in handler" in obj["msg"]
    assert "test-plugin" in obj["msg"]
    assert "Traceback" not in out
    assert "Traceback" not in capsys.readouterr().out


def test_runner_unexpected_exception_in_setup_is_code_100():
    def bad_setup(request):
        raise KeyError("setup broke")

    rc, out = run_captured({"ADD": lambda r: {"x": 1}}, env("ADD"), stdin(conf()), setup=bad_setup)
    assert rc == 1
    obj = one_json_object(out)
    assert obj["code"] == 100 and "KeyError" in obj["msg"]


def test_runner_long_exception_message_is_bounded():
    def long(request):
        raise ValueError("x" * 10000)

    rc, out = run_captured({"ADD": long}, env("ADD"), stdin(conf()))
    assert rc == 1
    assert len(one_json_object(out)["msg"]) <= 500


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_runner_cni_error_from_handler(version):
    def fail(request):
        raise CniError(errors.IPAM_EXHAUSTED, "no addresses", "pool p1 is full")

    rc, out = run_captured({"ADD": fail}, env("ADD"), stdin(conf(version)))
    assert rc == 1
    assert one_json_object(out) == {"cniVersion": version, "code": 101, "msg": "no addresses", "details": "pool p1 is full"}


def test_runner_translates_a_lower_floor_exception_with_its_table():
    from calico_cni.config import ConfigError
    from calico_cni.plugins.errors import cni_error

    def fail(request):
        raise ConfigError("mtu must be a whole number", "got 'x'")

    rc, out = run_captured({"ADD": fail}, env("ADD"), stdin(conf()), translate=cni_error)
    assert rc == 1
    obj = one_json_object(out)
    assert (obj["code"], obj["msg"], obj["details"]) == (7, "mtu must be a whole number", "got 'x'")
    # Without the table (or for an exception it does not know) it is an internal error.
    rc, out = run_captured({"ADD": fail}, env("ADD"), stdin(conf()))
    assert one_json_object(out)["code"] == 100
    rc, out = run_captured({"ADD": boom}, env("ADD"), stdin(conf()), translate=cni_error)
    assert one_json_object(out)["code"] == 100


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_error_json_carries_the_config_version_for_env_errors(version):
    rc, out = run_captured({"ADD": boom}, env("ADD", CNI_IFNAME=None), stdin(conf(version)))
    assert rc == 1
    obj = one_json_object(out)
    assert obj["code"] == 4 and obj["cniVersion"] == version
    assert "CNI_IFNAME" in obj["msg"]


def test_error_json_for_check_below_0_4_0_says_that_version():
    rc, out = run_captured({}, env("CHECK"), stdin(conf("0.3.1", prevResult={"ips": []})))
    assert rc == 1
    assert one_json_object(out)["cniVersion"] == "0.3.1"
    assert one_json_object(out)["code"] == 1


@pytest.mark.parametrize(
    "data,code",
    [(b"not json", 6), (b"[1]", 7), (stdin(conf("0.2.0")), 1), (stdin({"name": "x"}), 1)],
)
def test_error_json_when_the_version_is_unknown_uses_a_supported_version(data, code):
    rc, out = run_captured({"ADD": boom}, env("ADD"), data)
    assert rc == 1
    obj = one_json_object(out)
    assert obj["code"] == code
    assert obj["cniVersion"] in ALL_VERSIONS
    # libcni 1.1.2 (podman, containerd, cnitool) must be able to read it.
    assert obj["cniVersion"] != "1.1.0"


@pytest.mark.parametrize("environ", [{}, {"CNI_COMMAND": "BOGUS"}])
def test_runner_bad_command(environ):
    rc, out = run_captured({"ADD": boom}, environ, stdin(conf()))
    assert rc == 1
    obj = one_json_object(out)
    assert obj["code"] == 4 and "CNI_COMMAND" in obj["msg"]
    assert obj["cniVersion"] in ALL_VERSIONS


def test_error_to_dict():
    assert CniError(7, "m").to_dict("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "m"}
    assert CniError(7, "m", "d").to_dict("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "m", "details": "d"}
    assert str(CniError(7, "m", "d")) == "m: d"
    assert str(CniError(7, "m")) == "m"


# ------------------------------------------------------------------------------------------------
# Config keys (calico_cni/config.py)


def test_etcd_settings_from_config():
    s = cfg.etcd_settings(
        {"etcd_endpoints": "http://198.19.0.1:2379, https://198.19.0.2:2379 ,", "etcd_ca_cert_file": "/ca", "etcd_cert_file": "/c", "etcd_key_file": "/k", "etcd_timeout": 2},
        {},
    )
    assert s.endpoints == ("http://198.19.0.1:2379", "https://198.19.0.2:2379")
    assert (s.ca_cert_file, s.cert_file, s.key_file) == ("/ca", "/c", "/k")
    assert s.timeout == 2.0


def test_etcd_settings_environment_fallback_and_precedence():
    environ = {"ETCD_ENDPOINTS": "http://198.19.0.9:2379", "ETCD_CA_CERT_FILE": "/env-ca", "ETCD_KEY_FILE": "/env-key", "ETCD_CERT_FILE": "/env-cert"}
    s = cfg.etcd_settings({}, environ)
    assert s.endpoints == ("http://198.19.0.9:2379",)
    assert (s.ca_cert_file, s.cert_file, s.key_file) == ("/env-ca", "/env-cert", "/env-key")
    assert s.timeout == cfg.DEFAULT_ETCD_TIMEOUT
    s = cfg.etcd_settings({"etcd_endpoints": "http://198.19.0.1:2379", "etcd_ca_cert_file": "/cfg-ca"}, environ)
    assert s.endpoints == ("http://198.19.0.1:2379",)
    assert s.ca_cert_file == "/cfg-ca"


def test_etcd_settings_authority():
    assert cfg.etcd_settings({"etcd_authority": "198.19.0.1:2379"}, {}).endpoints == ("http://198.19.0.1:2379",)
    assert cfg.etcd_settings({}, {"ETCD_AUTHORITY": "198.19.0.1:2379"}).endpoints == ("http://198.19.0.1:2379",)


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({}, "no etcd endpoints"),
        ({"etcd_endpoints": ""}, "no etcd endpoints"),
        ({"etcd_endpoints": "198.19.0.1:2379"}, "198.19.0.1:2379"),
        ({"etcd_endpoints": "unix:///x"}, "unix:///x"),
        ({"etcd_endpoints": "http://"}, "http://"),
        ({"etcd_endpoints": ["http://198.19.0.1:2379"]}, "etcd_endpoints"),
        ({"etcd_endpoints": "http://198.19.0.1:2379", "datastore_type": "kubernetes"}, "kubernetes"),
        ({"etcd_endpoints": "http://198.19.0.1:2379", "etcd_timeout": 0}, "etcd_timeout"),
        ({"etcd_endpoints": "http://198.19.0.1:2379", "etcd_timeout": "5"}, "etcd_timeout"),
        ({"etcd_endpoints": "http://198.19.0.1:2379", "etcd_timeout": True}, "etcd_timeout"),
    ],
)
def test_etcd_settings_errors(config, fragment):
    err = raises(errors.INVALID_CONFIG, cfg.etcd_settings, config, {})
    assert fragment in err.msg


def test_ipam_settings_defaults_and_strings():
    s = cfg.ipam_settings({"ipam": {"type": "calico-ipam"}})
    assert (s.type, s.assign_ipv4, s.assign_ipv6, s.ipv4_pools, s.ipv6_pools) == ("calico-ipam", True, False, (), ())
    s = cfg.ipam_settings({"ipam": {"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "TRUE", "ipv6_pools": ["p6", "fd00:198:18::/64"]}})
    assert (s.assign_ipv4, s.assign_ipv6, s.ipv6_pools) == (False, True, ("p6", "fd00:198:18::/64"))
    s = cfg.ipam_settings({"ipam": {"type": "calico-ipam", "assign_ipv4": True, "assign_ipv6": True, "ipv4_pools": ["a", "b"]}})
    assert s.ipv4_pools == ("a", "b")


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({}, "ipam"),
        ({"ipam": "calico-ipam"}, "ipam"),
        ({"ipam": {}}, "ipam.type"),
        ({"ipam": {"type": ""}}, "ipam.type"),
        ({"ipam": {"type": "calico-ipam", "assign_ipv4": "yes"}}, "assign_ipv4"),
        ({"ipam": {"type": "calico-ipam", "assign_ipv6": 1}}, "assign_ipv6"),
        ({"ipam": {"type": "calico-ipam", "assign_ipv4": "false"}}, "assigns no address"),
        ({"ipam": {"type": "calico-ipam", "ipv4_pools": "p1"}}, "ipv4_pools"),
        ({"ipam": {"type": "calico-ipam", "ipv6_pools": ["ok", ""]}}, "ipv6_pools"),
        ({"ipam": {"type": "calico-ipam", "ipv4_pools": [5]}}, "ipv4_pools"),
    ],
)
def test_ipam_settings_errors(config, fragment):
    err = raises(errors.INVALID_CONFIG, cfg.ipam_settings, config)
    assert fragment in err.msg


def test_node_name_order(tmp_path, monkeypatch):
    f = tmp_path / "nodename"
    f.write_text("  node-from-file\n")
    assert cfg.node_name({"nodename": "n1", "nodename_file": str(f)}) == "n1"
    assert cfg.node_name({"nodename_file": str(f)}) == "node-from-file"
    monkeypatch.setattr(cfg, "host_name", lambda: "HostName")
    assert cfg.node_name({"nodename_file": str(tmp_path / "absent"), "nodename_file_optional": True}) == "hostname"
    f.write_text("\n")
    assert cfg.node_name({"nodename_file": str(f)}) == "hostname"


def test_node_name_missing_file_is_error_7_naming_it(tmp_path):
    path = str(tmp_path / "absent")
    err = raises(errors.INVALID_CONFIG, cfg.node_name, {"nodename_file": path})
    assert path in err.msg
    assert "nodename" in err.details
    raises(errors.INVALID_CONFIG, cfg.node_name, {"nodename": 5})
    raises(errors.INVALID_CONFIG, cfg.node_name, {"nodename_file": str(tmp_path)})  # a directory


def test_log_settings(tmp_path):
    s = cfg.log_settings({"log_level": "debug", "log_file_path": str(tmp_path / "l"), "log_file_max_size": 5, "log_file_max_count": 3, "log_file_max_age": 1})
    assert s == {"level": "debug", "path": str(tmp_path / "l"), "max_size_mb": 5, "max_count": 3, "max_age_days": 1}
    raises(errors.INVALID_CONFIG, cfg.log_settings, {"log_level": 3})
    raises(errors.INVALID_CONFIG, cfg.log_settings, {"log_file_max_size": -1})
