"""calico-node's settings (calico_cni.node.settings): every variable, its flag, the order in which
they win, the node name's sources, the probe flags and each refusal. Pure: no root, etcd or
namespace (the node name's file is a temporary file)."""

from __future__ import annotations

import pytest

from calico_cni.node import settings as s
from calico_cni.node.settings import SettingsError, from_args

ETCD = "http://198.19.0.1:2379"


@pytest.fixture
def base(tmp_path):
    """The least a node needs: etcd endpoints and a name; the state directory is the test's own
    (so the default nodename file is never the machine's)."""
    return {"ETCD_ENDPOINTS": ETCD, "NODENAME": "node1", "CALICO_STATE_DIR": str(tmp_path / "state")}


def refused(argv, env) -> str:
    with pytest.raises(SettingsError) as info:
        from_args(argv, env)
    return str(info.value)


def test_defaults(base, tmp_path):
    n = from_args([], base)
    assert n.nodename == "node1" and n.nodename_origin == "NODENAME"
    assert (n.ip, n.ip6) == ("", "")
    assert n.ip_autodetection_method == n.ip6_autodetection_method == "first-found"
    assert n.as_number is None and n.as_number_value is None
    assert n.backend == "bird" and n.router_id is None and n.datastore_type == "etcdv3"
    assert n.etcd.endpoints == (ETCD,) and n.etcd.timeout == 5.0 and n.etcd.username is None
    assert n.ipv4_pool == s.PoolSettings(4, "", 26, "Never", "Never", True, False, "")
    assert n.ipv6_pool == s.PoolSettings(6, "", 122, "Never", "Never", False, False, "")
    assert n.ipv4_pool.name == "default-ipv4-ippool" and n.ipv6_pool.name == "default-ipv6-ippool"
    assert not n.no_default_pools and n.ipv6_support and not n.disable_node_ip_check
    assert n.k8s_node_ref is None and n.cluster_type is None and n.autodetect_poll_interval == 60.0
    assert n.log_level == "info" and n.log_file is None and n.probes == () and n.threshold_time is None
    state = str(tmp_path / "state")
    assert n.run_dir == "/var/run/calico" and n.state_dir == state
    assert (n.bird_socket, n.bird_pid, n.cni_socket) == ("/var/run/calico/bird.ctl", "/var/run/calico/bird.pid", "/var/run/calico/cni.sock")
    assert (n.bird_config, n.nodename_file, n.mtu_file) == (f"{state}/bird.cfg", f"{state}/nodename", f"{state}/mtu")


def test_the_default_directories_are_calicos(monkeypatch):
    n = from_args([], {"ETCD_ENDPOINTS": ETCD, "NODENAME": "node1"})
    assert (n.run_dir, n.state_dir, n.nodename_file) == ("/var/run/calico", "/var/lib/calico", "/var/lib/calico/nodename")


# Each variable: a value to give it and what the settings then hold.
SAMPLES = {
    "nodename": ("node-7", lambda n: n.nodename),
    "nodename_file": ("/tmp/elsewhere/nodename", lambda n: n.nodename_file),
    "ip": ("198.19.1.2/24", lambda n: n.ip),
    "ip6": ("fd00:198:19::2/64", lambda n: n.ip6),
    "ip_autodetection_method": ("interface=eth.*", lambda n: n.ip_autodetection_method),
    "ip6_autodetection_method": ("cidr=fd00:198:19::/48", lambda n: n.ip6_autodetection_method),
    "as_number": ("64600", lambda n: n.as_number),
    "backend": ("none", lambda n: n.backend),
    "router_id": ("198.19.9.9", lambda n: n.router_id),
    "datastore_type": ("etcdv3", lambda n: n.datastore_type),
    "etcd_endpoints": ("http://198.19.0.2:2379,http://198.19.0.3:2379", lambda n: ",".join(n.etcd.endpoints)),
    "etcd_username": ("calico", lambda n: n.etcd.username),
    "etcd_password": ("secret", lambda n: n.etcd.password),
    "etcd_key_file": ("/etc/calico/key.pem", lambda n: n.etcd.key_file),
    "etcd_cert_file": ("/etc/calico/cert.pem", lambda n: n.etcd.cert_file),
    "etcd_ca_cert_file": ("/etc/calico/ca.pem", lambda n: n.etcd.ca_cert_file),
    "etcd_timeout": ("7.5", lambda n: str(n.etcd.timeout)),
    "ipv4_pool_cidr": ("198.18.0.0/16", lambda n: n.ipv4_pool.cidr),
    "ipv4_pool_block_size": ("28", lambda n: str(n.ipv4_pool.block_size)),
    "ipv4_pool_ipip": ("Always", lambda n: n.ipv4_pool.ipip_mode.capitalize()),
    "ipv4_pool_vxlan": ("Always", lambda n: n.ipv4_pool.vxlan_mode.capitalize()),
    "ipv4_pool_nat_outgoing": ("false", lambda n: str(n.ipv4_pool.nat_outgoing).lower()),
    "ipv4_pool_disable_bgp_export": ("true", lambda n: str(n.ipv4_pool.disable_bgp_export).lower()),
    "ipv4_pool_node_selector": ("rack == 'a'", lambda n: n.ipv4_pool.node_selector),
    "ipv6_pool_cidr": ("fd00:198:18::/48", lambda n: n.ipv6_pool.cidr),
    "ipv6_pool_block_size": ("120", lambda n: str(n.ipv6_pool.block_size)),
    "ipv6_pool_vxlan": ("Always", lambda n: n.ipv6_pool.vxlan_mode.capitalize()),
    "ipv6_pool_nat_outgoing": ("true", lambda n: str(n.ipv6_pool.nat_outgoing).lower()),
    "ipv6_pool_disable_bgp_export": ("true", lambda n: str(n.ipv6_pool.disable_bgp_export).lower()),
    "ipv6_pool_node_selector": ("rack == 'b'", lambda n: n.ipv6_pool.node_selector),
    "no_default_pools": ("true", lambda n: str(n.no_default_pools).lower()),
    "ipv6_support": ("false", lambda n: str(n.ipv6_support).lower()),
    "disable_node_ip_check": ("true", lambda n: str(n.disable_node_ip_check).lower()),
    "k8s_node_ref": ("k8s-node-1", lambda n: n.k8s_node_ref),
    "cluster_type": ("k8s,bgp", lambda n: n.cluster_type),
    "autodetect_poll_interval": ("2m", lambda n: "2m" if n.autodetect_poll_interval == 120 else n.autodetect_poll_interval),
    "run_dir": ("/tmp/run-node1", lambda n: n.run_dir),
    "state_dir": ("/tmp/state-node1", lambda n: n.state_dir),
    "cni_net_dir": ("/tmp/net-node1", lambda n: n.cni_net_dir),
    "log_level": ("debug", lambda n: n.log_level),
    "log_file": ("/tmp/node1.log", lambda n: n.log_file),
}
def test_every_variable_has_a_sample():
    assert set(SAMPLES) | {"etcd_discovery_srv"} == set(OTHERS) | {"etcd_discovery_srv"} == {v.dest for v in s.VARIABLES}


@pytest.mark.parametrize("variable", [v for v in s.VARIABLES if v.dest != "etcd_discovery_srv"], ids=lambda v: v.envs[-1])
def test_every_variable_is_read_from_its_environment_name_and_its_flag(variable, base):
    value, read = SAMPLES[variable.dest]
    base = {**base, **COMPANIONS.get(variable.dest, {})}
    from_env = from_args([], {**base, variable.envs[-1]: value})
    from_flag = from_args([f"{variable.option}={value}"], base)
    assert read(from_env) == value
    assert read(from_flag) == value


# What some variables need beside them (a password needs a user name; a certificate its key).
COMPANIONS = {
    "etcd_password": {"ETCD_USERNAME": "calico"},
    "etcd_key_file": {"ETCD_CERT_FILE": "/etc/calico/cert.pem"},
    "etcd_cert_file": {"ETCD_KEY_FILE": "/etc/calico/key.pem"},
}

# Another valid value of each variable, given in the environment while the flag gives the sample.
OTHERS = {
    "nodename": "node-8", "nodename_file": "/tmp/other/nodename", "ip": "198.19.1.3/24", "ip6": "fd00:198:19::3/64",
    "ip_autodetection_method": "first-found", "ip6_autodetection_method": "first-found", "as_number": "64999", "backend": "vxlan",
    "router_id": "hash", "datastore_type": "", "etcd_endpoints": "http://198.19.0.9:2379", "etcd_username": "someone",
    "etcd_password": "other", "etcd_key_file": "/k", "etcd_cert_file": "/c", "etcd_ca_cert_file": "/ca", "etcd_timeout": "9",
    "ipv4_pool_cidr": "198.18.0.0/20", "ipv4_pool_block_size": "30", "ipv4_pool_ipip": "never", "ipv4_pool_vxlan": "never",
    "ipv4_pool_nat_outgoing": "true", "ipv4_pool_disable_bgp_export": "false", "ipv4_pool_node_selector": "all()",
    "ipv6_pool_cidr": "fd00:198:18:1::/64", "ipv6_pool_block_size": "124", "ipv6_pool_vxlan": "never",
    "ipv6_pool_nat_outgoing": "false", "ipv6_pool_disable_bgp_export": "false", "ipv6_pool_node_selector": "all()",
    "no_default_pools": "false", "ipv6_support": "true", "disable_node_ip_check": "false", "k8s_node_ref": "k8s-node-2",
    "cluster_type": "bgp", "autodetect_poll_interval": "30s", "run_dir": "/tmp/run-x", "state_dir": "/tmp/state-x",
    "cni_net_dir": "/tmp/net-x", "log_level": "error", "log_file": "/tmp/x.log",
}  # fmt: skip


# DATASTORE_TYPE has one valid value: its flag's precedence is tested with the datastore variables.
@pytest.mark.parametrize("variable", [v for v in s.VARIABLES if v.dest not in ("etcd_discovery_srv", "datastore_type")], ids=lambda v: v.envs[-1])
def test_a_flag_wins_over_its_variable(variable, base):
    value, read = SAMPLES[variable.dest]
    env = {**base, **COMPANIONS.get(variable.dest, {}), **{e: OTHERS[variable.dest] for e in variable.envs}}
    assert read(from_args([], env)) != value
    assert read(from_args([variable.option, value], env)) == value


def test_flag_wins_over_calico_prefixed_wins_over_plain_datastore_variables(base):
    env = {**base, "ETCD_ENDPOINTS": "http://198.19.0.3:2379", "CALICO_ETCD_ENDPOINTS": "http://198.19.0.2:2379"}
    assert from_args([], env).etcd.endpoints == ("http://198.19.0.2:2379",)
    assert from_args(["--etcd-endpoints", "http://198.19.0.4:2379"], env).etcd.endpoints == ("http://198.19.0.4:2379",)
    env = {**base, "ETCD_USERNAME": "plain", "CALICO_ETCD_USERNAME": "prefixed", "ETCD_PASSWORD": "p"}
    assert from_args([], env).etcd.username == "prefixed"
    for name in ("ETCD_KEY_FILE", "ETCD_CERT_FILE", "ETCD_CA_CERT_FILE"):
        env = {**base, "ETCD_KEY_FILE": "/k", "ETCD_CERT_FILE": "/c", name: "/plain", f"CALICO_{name}": "/prefixed"}
        n = from_args([], env)
        assert {"ETCD_KEY_FILE": n.etcd.key_file, "ETCD_CERT_FILE": n.etcd.cert_file, "ETCD_CA_CERT_FILE": n.etcd.ca_cert_file}[name] == "/prefixed"
    assert "CALICO_DATASTORE_TYPE=kubernetes" in refused([], {**base, "DATASTORE_TYPE": "etcdv3", "CALICO_DATASTORE_TYPE": "kubernetes"})
    assert from_args(["--datastore-type", "etcdv3"], {**base, "DATASTORE_TYPE": "kubernetes"}).datastore_type == "etcdv3"


def test_an_empty_variable_counts_as_unset(base):
    env = {**base, "CALICO_ETCD_ENDPOINTS": "", "CALICO_IPV4POOL_BLOCK_SIZE": "", "CALICO_NETWORKING_BACKEND": "", "CALICO_LOG_LEVEL": " ", "CALICO_IPV4POOL_NAT_OUTGOING": ""}
    n = from_args([], env)
    assert n.etcd.endpoints == (ETCD,) and n.ipv4_pool.block_size == 26 and n.backend == "bird" and n.log_level == "info"
    assert n.ipv4_pool.nat_outgoing is True


def test_help_names_every_variable_and_its_default(capsys):
    with pytest.raises(SystemExit) as info:
        s.parser().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for variable in s.VARIABLES:
        assert variable.option in text
        for env in variable.envs:
            assert f"${env}" in text
    for default in ("default bird", "default /var/run/calico", "default /var/lib/calico", "default 26", "default 122", "default first-found", "default true"):
        assert default in text
    for probe in s.PROBES:
        assert f"-{probe}" in text
    assert "-threshold-time" in text


# --------------------------------------------------------------------------------------------
# Refusals


def test_the_kubernetes_datastore_is_refused(base):
    text = refused([], {**base, "DATASTORE_TYPE": "kubernetes"})
    assert text == "DATASTORE_TYPE=kubernetes is not supported: only etcdv3 is supported: set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS"
    assert "only etcdv3 is supported" in refused([], {**base, "DATASTORE_TYPE": "consul"})


def test_no_etcd_endpoints_is_refused(base):
    env = {k: v for k, v in base.items() if k != "ETCD_ENDPOINTS"}
    text = refused([], env)
    assert text.startswith("no etcd endpoints configured (Calico would fall back to the Kubernetes datastore")
    assert "only etcdv3 is supported: set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS" in text
    assert "no etcd endpoints" in refused([], {**env, "DATASTORE_TYPE": "etcdv3"})


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"ETCD_DISCOVERY_SRV": "example.com"}, "ETCD_DISCOVERY_SRV (etcd discovery by DNS SRV records) is not supported: set ETCD_ENDPOINTS"),
        ({"ETCD_PASSWORD": "secret"}, "an etcd password is set but no user name: set ETCD_USERNAME too"),
        ({"ETCD_CERT_FILE": "/c"}, "ETCD_CERT_FILE and ETCD_KEY_FILE go together"),
        ({"ETCD_KEY_FILE": "/k"}, "ETCD_CERT_FILE and ETCD_KEY_FILE go together"),
        ({"ETCD_ENDPOINTS": "198.19.0.1:2379"}, "ETCD_ENDPOINTS: etcd endpoint '198.19.0.1:2379' is invalid: expected http://host:port"),
        ({"CALICO_ETCD_ENDPOINTS": "198.19.0.1:2379"}, "CALICO_ETCD_ENDPOINTS: etcd endpoint '198.19.0.1:2379' is invalid: expected http://host:port"),
        ({"ETCD_ENDPOINTS": "http://user:pw@198.19.0.1:2379"}, "ETCD_ENDPOINTS: an etcd endpoint carries credentials in its URL: put the user name and password in"),
        ({"ETCD_TIMEOUT": "soon"}, "ETCD_TIMEOUT='soon' is not a number of seconds: set ETCD_TIMEOUT to e.g. 5"),
        ({"ETCD_TIMEOUT": "0"}, "ETCD_TIMEOUT must be a number >= 0.1"),
        ({"ETCD_TIMEOUT": "301"}, "ETCD_TIMEOUT must be at most 300 seconds"),
    ],
)
def test_etcd_refusals(base, env, expected):
    text = refused([], {**base, **env})
    assert text.startswith(expected)
    assert "pw" not in text and "secret" not in text


@pytest.mark.parametrize("value", ["gobgp", "calico", "BIRD6"])
def test_a_backend_other_than_bird_vxlan_none_is_refused(base, value):
    assert refused([], {**base, "CALICO_NETWORKING_BACKEND": value}) == f"CALICO_NETWORKING_BACKEND={value!r} is not a networking backend: use bird, vxlan or none"


def test_backend_is_case_insensitive(base):
    assert from_args([], {**base, "CALICO_NETWORKING_BACKEND": "BIRD"}).backend == "bird"
    assert from_args([], {**base, "CALICO_NETWORKING_BACKEND": "None"}).backend == "none"


@pytest.mark.parametrize("value", ["198.19.1.2", "198.19.1.2/24", "autodetect", "none"])
def test_ip_accepts(base, value):
    assert from_args([], {**base, "IP": value}).ip == value


@pytest.mark.parametrize("value", ["fd00::1", "198.19.1.256", "198.19.1.2/33", "auto", "eth0"])
def test_ip_refuses(base, value):
    assert refused([], {**base, "IP": value}) == f"IP={value!r} is not an IPv4 address: set IP to an IPv4 address (with or without /prefix), autodetect, or none"


@pytest.mark.parametrize("value", ["198.19.1.2", "fd00::1/129", "detect"])
def test_ip6_refuses(base, value):
    assert refused([], {**base, "IP6": value}).startswith(f"IP6={value!r} is not an IPv6 address: set IP6 to an IPv6 address")


@pytest.mark.parametrize("value, number", [("64512", 64512), ("1", 1), ("4294967295", 4294967295), ("1.10", 65546), ("65535.65535", 4294967295)])
def test_as_accepts(base, value, number):
    n = from_args([], {**base, "AS": value})
    assert n.as_number == value and n.as_number_value == number


@pytest.mark.parametrize("value", ["0", "4294967296", "-1", "64512x", "1.65536", "a.b", "1.2.3"])
def test_as_refuses_out_of_range(base, value):
    assert refused([], {**base, "AS": value}).startswith(f"AS={value!r} is not a valid AS number: use 1 to 4294967295")


@pytest.mark.parametrize("value", ["hash", "198.19.9.9"])
def test_router_id_accepts(base, value):
    assert from_args([], {**base, "CALICO_ROUTER_ID": value}).router_id == value


@pytest.mark.parametrize("value", ["fd00::1", "hash2", "1.2.3"])
def test_router_id_refuses(base, value):
    assert refused([], {**base, "CALICO_ROUTER_ID": value}) == f"CALICO_ROUTER_ID={value!r} is not a router id: use an IPv4 address (BGP router ids are 32-bit) or hash"


@pytest.mark.parametrize(
    "word, mode",
    [("", "Never"), ("off", "Never"), ("Never", "Never"), ("NEVER", "Never"), ("crosssubnet", "CrossSubnet"), ("Cross-Subnet", "CrossSubnet"), ("CrossSubnet", "CrossSubnet"), ("always", "Always"), ("ALWAYS", "Always")],
)
def test_pool_modes_as_calico(base, word, mode):
    n = from_args([], {**base, "CALICO_IPV4POOL_IPIP": word, "CALICO_IPV4POOL_VXLAN": word, "CALICO_IPV6POOL_VXLAN": word})
    assert (n.ipv4_pool.ipip_mode, n.ipv4_pool.vxlan_mode, n.ipv6_pool.vxlan_mode) == (mode, mode, mode)
    assert n.ipv6_pool.ipip_mode == "Never"


@pytest.mark.parametrize("name", ["CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN", "CALICO_IPV6POOL_VXLAN"])
def test_pool_mode_refusal(base, name):
    assert refused([], {**base, name: "on"}) == f"{name}='on' is not an encapsulation mode: use never (or off), cross-subnet, or always"


@pytest.mark.parametrize("name, low, high", [("CALICO_IPV4POOL_BLOCK_SIZE", 20, 32), ("CALICO_IPV6POOL_BLOCK_SIZE", 116, 128)])
def test_block_size_ranges(base, name, low, high):
    version = 4 if "IPV4" in name else 6
    for good in (low, high):
        assert from_args([], {**base, name: str(good)}).pool(version).block_size == good
    for bad in (str(low - 1), str(high + 1), "26.5", "big", "-26"):
        assert refused([], {**base, name: bad}) == f"{name}={bad!r} is not an IPv{version} block size: use a prefix length from {low} to {high}"


def test_pool_cidrs(base):
    n = from_args([], {**base, "CALICO_IPV4POOL_CIDR": "198.18.5.0/16", "CALICO_IPV6POOL_CIDR": "none"})
    assert n.ipv4_pool.cidr == "198.18.0.0/16"  # masked, as Calico's ParseCIDR
    assert n.ipv6_pool.cidr == "none"
    for name, bad in (("CALICO_IPV4POOL_CIDR", "fd00:198:18::/48"), ("CALICO_IPV4POOL_CIDR", "198.18.0.0"), ("CALICO_IPV6POOL_CIDR", "198.18.0.0/16"), ("CALICO_IPV6POOL_CIDR", "nope")):
        assert refused([], {**base, name: bad}).startswith(f"Invalid CIDR specified in {name} {bad!r}")


def test_pool_node_selector_must_parse(base):
    assert from_args([], {**base, "CALICO_IPV4POOL_NODE_SELECTOR": "all()"}).ipv4_pool.node_selector == "all()"
    assert refused([], {**base, "CALICO_IPV6POOL_NODE_SELECTOR": "rack =="}).startswith("CALICO_IPV6POOL_NODE_SELECTOR='rack ==' is not a valid node selector: ")


def test_no_default_pools_with_a_pool_cidr_is_refused(base):
    text = refused([], {**base, "NO_DEFAULT_POOLS": "true", "CALICO_IPV6POOL_CIDR": "fd00:198:18::/48"})
    assert text == "NO_DEFAULT_POOLS is true and CALICO_IPV6POOL_CIDR is set: Calico refuses this combination: unset one of them"
    assert from_args([], {**base, "NO_DEFAULT_POOLS": "true"}).no_default_pools


@pytest.mark.parametrize("word, value", [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("y", True), ("t", True), ("false", False), ("0", False), ("no", False), ("N", False), ("f", False)])
def test_booleans(base, word, value):
    n = from_args([], {**base, "CALICO_IPV4POOL_NAT_OUTGOING": word, "FELIX_IPV6SUPPORT": word, "CALICO_IPV6POOL_DISABLE_BGP_EXPORT": word})
    assert n.ipv4_pool.nat_outgoing is n.ipv6_support is n.ipv6_pool.disable_bgp_export is value


@pytest.mark.parametrize("name", ["NO_DEFAULT_POOLS", "DISABLE_NODE_IP_CHECK"])
def test_booleans_calico_compares_with_true(base, name):
    # Calico's start-up reads these two as `== "true"` (not evaluateENVBool): its "yes" or "1"
    # mean false. Only true and false are taken; a word Calico reads the other way is refused.
    dest = name.lower()
    for word, value in (("true", True), ("True", True), ("false", False), ("FALSE", False)):
        assert getattr(from_args([], {**base, name: word}), dest) is value
    for word in ("1", "yes", "y", "t", "0", "no", "f"):
        assert refused([], {**base, name: word}) == f"{name}={word!r} is ambiguous: Calico takes only the word true as true here: use true or false"
    assert refused([], {**base, name: "sure"}) == f"{name}='sure' is not a boolean: use true or false"


def test_a_boolean_that_is_neither_is_refused(base):
    assert refused([], {**base, "DISABLE_NODE_IP_CHECK": "sure"}) == "DISABLE_NODE_IP_CHECK='sure' is not a boolean: use true or false"


def test_a_boolean_flag_alone_is_true(base):
    assert from_args(["--no-default-pools"], base).no_default_pools
    assert from_args(["--disable-node-ip-check"], base).disable_node_ip_check
    assert not from_args(["--no-default-pools=false"], {**base, "NO_DEFAULT_POOLS": "true"}).no_default_pools


@pytest.mark.parametrize(
    "text, kind, values",
    [
        ("", "first-found", ()),
        ("first-found", "first-found", ()),
        ("interface=eth.*", "interface", ("eth.*",)),
        ("interface=eth0 , ens.*", "interface", ("eth0", "ens.*")),
        ("skip-interface=uplink.*,wlan0", "skip-interface", ("uplink.*", "wlan0")),
        ("can-reach=198.19.0.1", "can-reach", ("198.19.0.1",)),
        ("can-reach=www.example.com", "can-reach", ("www.example.com",)),
        ("cidr=198.19.0.0/16, fd00:198:19::/48", "cidr", ("198.19.0.0/16", "fd00:198:19::/48")),
        ("cidr=198.19.1.7/24", "cidr", ("198.19.1.0/24",)),
        ("kubernetes-internal-ip", "kubernetes-internal-ip", ()),
    ],
)
def test_autodetection_methods_parse(text, kind, values):
    method = s.parse_method(text)
    assert (method.kind, method.values) == (kind, values)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("first", "invalid IP autodetection method IP_AUTODETECTION_METHOD='first': use first-found, interface=REGEX[,REGEX], skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR]"),
        ("interface=eth[", "IP_AUTODETECTION_METHOD='interface=eth[': 'eth[' is not a valid interface regex"),
        ("skip-interface=(", "IP_AUTODETECTION_METHOD='skip-interface=(': '(' is not a valid interface regex"),
        ("cidr=198.19.0.1", "IP_AUTODETECTION_METHOD='cidr=198.19.0.1': '198.19.0.1' is not a CIDR: write cidr=198.19.0.0/16[,CIDR...]"),
        ("cidr=10.0.0.0/8,x", "IP_AUTODETECTION_METHOD='cidr=10.0.0.0/8,x': 'x' is not a CIDR"),
        ("can-reach=", "IP_AUTODETECTION_METHOD='can-reach=': can-reach needs a destination"),
    ],
)
def test_autodetection_method_refusals(base, text, expected):
    assert refused([], {**base, "IP_AUTODETECTION_METHOD": text}).startswith(expected)
    assert refused([], {**base, "IP6_AUTODETECTION_METHOD": text}).startswith(expected.replace("IP_AUTODETECTION_METHOD", "IP6_AUTODETECTION_METHOD"))


def test_cni_net_dir(base):
    assert from_args([], base).cni_net_dir == "/etc/cni/net.d"
    assert from_args([], {**base, "CNI_NET_DIR": "/opt/net.d"}).cni_net_dir == "/opt/net.d"


def test_method_of_each_version(base):
    n = from_args([], {**base, "IP_AUTODETECTION_METHOD": "interface=uplink", "IP6_AUTODETECTION_METHOD": "can-reach=fd00:198:19::1"})
    assert n.method(4) == s.Method("interface=uplink", "interface", ("uplink",))
    assert n.method(6) == s.Method("can-reach=fd00:198:19::1", "can-reach", ("fd00:198:19::1",))


@pytest.mark.parametrize("name, example", [("CALICO_RUN_DIR", "/var/run/calico"), ("CALICO_STATE_DIR", "/var/lib/calico"),
                                           ("CALICO_NODENAME_FILE", "/var/lib/calico/nodename"), ("CNI_NET_DIR", "/etc/cni/net.d")])
def test_relative_paths_are_refused(base, name, example):
    assert refused([], {**base, name: "relative/dir"}) == f"{name}='relative/dir' is not an absolute path: set {name} to an absolute path, e.g. {example}"
    flag = {"CALICO_RUN_DIR": "--calico-run-dir", "CALICO_STATE_DIR": "--calico-state-dir", "CALICO_NODENAME_FILE": "--calico-nodename-file",
            "CNI_NET_DIR": "--cni-net-dir"}[name]
    assert refused([flag, "rel"], base).startswith(f"{flag}='rel' is not an absolute path: set {flag} to")


@pytest.mark.parametrize("word, level", [("DEBUG", "debug"), ("Info", "info"), ("warn", "warning"), ("warning", "warning"), ("error", "error"), ("fatal", "error")])
def test_log_levels(base, word, level):
    assert from_args([], {**base, "CALICO_LOG_LEVEL": word}).log_level == level


def test_a_log_level_that_is_none_is_refused(base):
    assert refused(["--log-level", "loud"], base) == "--log-level='loud' is not a log level: use debug, info, warning or error"


def test_an_unknown_flag_is_a_settings_error(base):
    assert refused(["--bogus"], base) == "unrecognized arguments: --bogus: see calico-node --help"
    # No abbreviations: a typo is not silently taken for another flag.
    assert "unrecognized arguments: --no-default" in refused(["--no-default"], base)


@pytest.mark.parametrize("value, seconds", [("0", 0.0), ("90s", 90.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5m", 90.0), ("45", 45.0)])
def test_durations(base, value, seconds):
    assert from_args([], {**base, "AUTODETECT_POLL_INTERVAL": value}).autodetect_poll_interval == seconds
    assert from_args(["-bird-ready", "-threshold-time", value], base).threshold_time == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "-5s", "s", "inf"])
def test_duration_refusals(base, value):
    assert refused([], {**base, "AUTODETECT_POLL_INTERVAL": value}).startswith(f"AUTODETECT_POLL_INTERVAL={value!r} is not a duration")
    assert refused([f"-threshold-time={value}"], base).startswith(f"-threshold-time={value!r} is not a duration")


# --------------------------------------------------------------------------------------------
# Probes


def test_probe_flags_with_one_dash_as_calico_and_with_two(base):
    n = from_args(["-felix-ready", "-bird-ready", "--bird6-live", "-threshold-time=45s"], base)
    assert n.probes == ("bird-ready", "bird6-live", "felix-ready")
    assert n.threshold_time == 45.0
    for probe in s.PROBES:
        assert from_args([f"-{probe}"], base).probes == (probe,)


def test_a_probe_does_not_need_the_datastore_settings(tmp_path):
    env = {"NODENAME": "node1", "CALICO_RUN_DIR": str(tmp_path / "run"), "DATASTORE_TYPE": "kubernetes"}
    n = from_args(["-felix-live"], env)
    assert n.probes == ("felix-live",) and n.etcd.endpoints == () and n.run_dir == str(tmp_path / "run")
    # Without a probe the same environment is refused.
    with pytest.raises(SettingsError):
        from_args([], env)


# --------------------------------------------------------------------------------------------
# The node name


def test_node_name_order(tmp_path, monkeypatch):
    monkeypatch.setattr(s.socket, "gethostname", lambda: "Machine-Name")
    state = tmp_path / "state"
    env = {"ETCD_ENDPOINTS": ETCD, "CALICO_STATE_DIR": str(state)}
    # Nothing set: the host name, lower-cased.
    n = from_args([], env)
    assert (n.nodename, n.nodename_origin) == ("machine-name", "the host name")
    # HOSTNAME beats it, lower-cased too.
    n = from_args([], {**env, "HOSTNAME": "Host-From-Env"})
    assert (n.nodename, n.nodename_origin) == ("host-from-env", "HOSTNAME")
    # The nodename file beats HOSTNAME (its surrounding white space is dropped, its case kept).
    state.mkdir()
    (state / "nodename").write_text("Stored-Node\n")
    n = from_args([], {**env, "HOSTNAME": "host-from-env"})
    assert (n.nodename, n.nodename_origin) == ("Stored-Node", str(state / "nodename"))
    # NODENAME beats everything, case kept.
    n = from_args([], {**env, "HOSTNAME": "host-from-env", "NODENAME": "Explicit"})
    assert (n.nodename, n.nodename_origin) == ("Explicit", "NODENAME")
    # CALICO_NODENAME_FILE moves the file.
    other = tmp_path / "other-name"
    other.write_text("from-other-file")
    n = from_args([], {**env, "CALICO_NODENAME_FILE": str(other)})
    assert (n.nodename, n.nodename_file) == ("from-other-file", str(other))
    # An empty file counts as none.
    other.write_text("")
    assert from_args([], {**env, "CALICO_NODENAME_FILE": str(other)}).nodename == "machine-name"


def test_an_unreadable_nodename_file_is_refused(tmp_path):
    path = tmp_path / "nodename"
    path.mkdir()
    text = refused([], {"ETCD_ENDPOINTS": ETCD, "CALICO_NODENAME_FILE": str(path)})
    assert text.startswith(f"cannot read the node name from {path}: ") and text.endswith("fix the file, or set NODENAME")


@pytest.mark.parametrize("env", [{"NODENAME": "bad/name"}, {"HOSTNAME": "has space"}, {"NODENAME": "-dash"}])
def test_an_invalid_node_name_is_refused(tmp_path, env):
    text = refused([], {"ETCD_ENDPOINTS": ETCD, "CALICO_STATE_DIR": str(tmp_path), **env})
    assert "is not a valid node name" in text and text.endswith("set NODENAME")


@pytest.mark.parametrize("name, valid", [("node1", True), ("Node-1.rack_2", True), ("a" * 253, True), ("a" * 254, False), ("node_", False), ("nöde", False), ("a/b", False)])
def test_the_node_and_its_plugins_agree_on_node_names(tmp_path, name, valid):
    from calico_cni.config import ConfigError, check_node_name_keys

    env = {"ETCD_ENDPOINTS": ETCD, "CALICO_STATE_DIR": str(tmp_path), "NODENAME": name}
    if valid:
        check_node_name_keys({"nodename": name})
        assert from_args([], env).nodename == name
    else:
        with pytest.raises(ConfigError):
            check_node_name_keys({"nodename": name})
        assert refused([], env).startswith(f"the node name from NODENAME {name[:80]!r} is not a valid node name: a node name has 1 to 253")
