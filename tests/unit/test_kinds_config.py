"""The configuration kinds (FelixConfiguration, KubeControllersConfiguration, ClusterInformation)
decode as Calico v3.30 does: every FelixConfigurationSpec field is known, per rule one accepted and
one refused value, Calico's defaults, aliases, columns and a documented-style file."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest

from calico_cni.model import kinds
from calico_cni.model.kinds import config
from tests.kinds_support import API, refused

FELIX = "FelixConfiguration"
KCC = "KubeControllersConfiguration"


def doc(kind: str, spec: dict, name: str = "default", **extra) -> dict:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec, **extra}


RULES = [
    (FELIX, {"logSeverityScreen": "Warning"}, {"logSeverityScreen": "warning"}, "spec.logSeverityScreen", "expected one of Debug"),
    (FELIX, {"logSeverityFile": "Fatal"}, {"logSeverityFile": "Trace"}, "spec.logSeverityFile", "expected one of"),
    (FELIX, {"reportingInterval": "0s"}, {"reportingInterval": "30"}, "spec.reportingInterval", "invalid duration"),
    (FELIX, {"routeRefreshInterval": "1m30s"}, {"routeRefreshInterval": 90}, "spec.routeRefreshInterval", "expected a string"),
    (
        FELIX,
        {"defaultEndpointToHostAction": "Return"},
        {"defaultEndpointToHostAction": "Allow"},
        "spec.defaultEndpointToHostAction",
        "expected one of Drop, Accept, Return",
    ),
    (FELIX, {"iptablesFilterAllowAction": "Return"}, {"iptablesFilterAllowAction": "Drop"}, "spec.iptablesFilterAllowAction", "expected one of Accept, Return"),
    (FELIX, {"nftablesFilterDenyAction": "Reject"}, {"nftablesFilterDenyAction": "Accept"}, "spec.nftablesFilterDenyAction", "expected one of Drop, Reject"),
    (FELIX, {"iptablesBackend": "NFT"}, {"iptablesBackend": "nftables"}, "spec.iptablesBackend", "expected one of Legacy, NFT, Auto"),
    (FELIX, {"chainInsertMode": "append"}, {"chainInsertMode": "Prepend"}, "spec.chainInsertMode", "expected one of Insert, Append"),
    (FELIX, {"bpfLogLevel": "Debug"}, {"bpfLogLevel": "Warning"}, "spec.bpfLogLevel", "expected one of Debug, Info, Off"),
    (FELIX, {"bpfExternalServiceMode": "DSR"}, {"bpfExternalServiceMode": "dsr"}, "spec.bpfExternalServiceMode", "expected one of Tunnel, DSR"),
    (
        FELIX,
        {"bpfConnectTimeLoadBalancing": "Disabled"},
        {"bpfConnectTimeLoadBalancing": "UDP"},
        "spec.bpfConnectTimeLoadBalancing",
        "expected one of TCP, Enabled, Disabled",
    ),
    (FELIX, {"bpfConntrackMode": "BPFProgram"}, {"bpfConntrackMode": "Kernel"}, "spec.bpfConntrackMode", "expected one of Auto"),
    (FELIX, {"awsSrcDstCheck": "Disable"}, {"awsSrcDstCheck": "Disabled"}, "spec.awsSrcDstCheck", "expected one of DoNothing, Enable, Disable"),
    (FELIX, {"serviceLoopPrevention": "Disabled"}, {"serviceLoopPrevention": "Accept"}, "spec.serviceLoopPrevention", "expected one of Drop, Reject, Disabled"),
    (FELIX, {"ipForwarding": "Disabled"}, {"ipForwarding": "Off"}, "spec.ipForwarding", "expected one of Enabled, Disabled"),
    (FELIX, {"nftablesMode": "Auto"}, {"nftablesMode": "On"}, "spec.nftablesMode", "expected one of Disabled, Enabled, Auto"),
    (FELIX, {"floatingIPs": "Enabled"}, {"floatingIPs": True}, "spec.floatingIPs", "expected one of Enabled, Disabled"),
    (FELIX, {"routeSource": "WorkloadIPs"}, {"routeSource": "BGP"}, "spec.routeSource", "expected one of WorkloadIPs, CalicoIPAM"),
    (FELIX, {"logDebugFilenameRegex": "^(route|iface)_.*"}, {"logDebugFilenameRegex": "(unclosed"}, "spec.logDebugFilenameRegex", "invalid regular expression"),
    (FELIX, {"featureGates": "BPFConnectTimeLB=true,"}, {"featureGates": "BPFConnectTimeLB"}, "spec.featureGates", "key=value"),
    (FELIX, {"prometheusMetricsHost": "127.0.0.1"}, {"prometheusMetricsHost": "metrics host"}, "spec.prometheusMetricsHost", "invalid host"),
    (
        FELIX,
        {"iptablesNATOutgoingInterfaceFilter": "eth+"},
        {"iptablesNATOutgoingInterfaceFilter": "eth*"},
        "spec.iptablesNATOutgoingInterfaceFilter",
        "invalid interface pattern",
    ),
    (FELIX, {"wireguardInterfaceName": "wg0"}, {"wireguardInterfaceName": "wireguard.cali.too.long"}, "spec.wireguardInterfaceName", "invalid interface name"),
    (FELIX, {"wireguardInterfaceNameV6": "*"}, {"wireguardInterfaceNameV6": "wg:6"}, "spec.wireguardInterfaceNameV6", "invalid interface name"),
    (FELIX, {"wireguardListeningPort": 51820}, {"wireguardListeningPort": 0}, "spec.wireguardListeningPort", "out of range"),
    (FELIX, {"wireguardRoutingRulePriority": 32765}, {"wireguardRoutingRulePriority": 32766}, "spec.wireguardRoutingRulePriority", "out of range"),
    (FELIX, {"goGCThreshold": -1}, {"goGCThreshold": -2}, "spec.goGCThreshold", "out of range"),
    (FELIX, {"debugPort": 0}, {"debugPort": 65536}, "spec.debugPort", "out of range"),
    (FELIX, {"bpfMapSizeConntrackCleanupQueue": 1}, {"bpfMapSizeConntrackCleanupQueue": 0}, "spec.bpfMapSizeConntrackCleanupQueue", "out of range"),
    (FELIX, {"iptablesMarkMask": 4294901760}, {"iptablesMarkMask": -1}, "spec.iptablesMarkMask", "out of range"),
    (FELIX, {"natOutgoingAddress": "198.19.0.1"}, {"natOutgoingAddress": "fd00::1"}, "spec.natOutgoingAddress", "invalid IPv4"),
    (FELIX, {"deviceRouteSourceAddressIPv6": "fd00::1"}, {"deviceRouteSourceAddressIPv6": "198.19.0.1"}, "spec.deviceRouteSourceAddressIPv6", "invalid IPv6"),
    (FELIX, {"openstackRegion": "region-one"}, {"openstackRegion": "Region_One"}, "spec.openstackRegion", "must be a valid DNS label"),
    (FELIX, {"openstackRegion": "r" * 46}, {"openstackRegion": "r" * 47}, "spec.openstackRegion", "too long"),
    (FELIX, {"externalNodesList": ["198.19.0.0/16", "203.0.113.7"]}, {"externalNodesList": ["fd00::/64"]}, "spec.externalNodesList[0]", "invalid IPv6 CIDR"),
    (FELIX, {"externalNodesList": ["198.19.0.0/16"]}, {"externalNodesList": ["198.19.0.0/33"]}, "spec.externalNodesList[0]", "invalid CIDR"),
    (
        FELIX,
        {"kubeNodePortRanges": ["30000:32767", 8080]},
        {"kubeNodePortRanges": ["nodeports"]},
        "spec.kubeNodePortRanges[0]",
        "should not contain named ports",
    ),
    (FELIX, {"kubeNodePortRanges": [1, 2, 3, 4, 5, 6, 7]}, {"kubeNodePortRanges": [1, 2, 3, 4, 5, 6, 7, 8]}, "spec.kubeNodePortRanges", "too long (max 7)"),
    (FELIX, {"natPortRange": "32768:65000"}, {"natPortRange": "65000:32768"}, "spec.natPortRange", "greater than the maximum"),
    (FELIX, {"bpfPSNATPorts": "20000:29999"}, {"bpfPSNATPorts": 0}, "spec.bpfPSNATPorts", "between 1 and 65535"),
    (
        FELIX,
        {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}, {"protocol": "udp", "port": 68, "net": "0.0.0.0/0"}]},
        {"failsafeInboundHostPorts": [{"protocol": "ICMP", "port": 0}]},
        "spec.failsafeInboundHostPorts[0].protocol",
        "expected one of TCP, UDP, SCTP",
    ),
    (
        FELIX,
        {"failsafeOutboundHostPorts": [{"protocol": "TCP", "port": 2379}]},
        {"failsafeOutboundHostPorts": [{"protocol": "TCP", "port": 2379, "host": "etcd"}]},
        "spec.failsafeOutboundHostPorts[0].host",
        "unknown field",
    ),
    (
        FELIX,
        {"healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "30s"}]},
        {"healthTimeoutOverrides": [{"name": "main/loop", "timeout": "30s"}]},
        "spec.healthTimeoutOverrides[0].name",
        "invalid name",
    ),
    (
        FELIX,
        {"healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "0s"}]},
        {"healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "-30s"}]},
        "spec.healthTimeoutOverrides[0].timeout",
        "should not be negative",
    ),
    (FELIX, {"routeTableRange": {"min": 1, "max": 250}}, {"routeTableRange": {"min": 0, "max": 250}}, "spec.routeTableRange", "within 1..250"),
    (
        FELIX,
        {"routeTableRanges": [{"min": 1, "max": 250}, {"min": 1000, "max": 2000}]},
        {"routeTableRanges": [{"min": 300, "max": 200}]},
        "spec.routeTableRanges[0]",
        "min value cannot be greater than max value",
    ),
    (
        FELIX,
        {"routeTableRanges": [{"min": 1, "max": 65535}]},
        {"routeTableRanges": [{"min": 1, "max": 65536}]},
        "spec.routeTableRanges",
        "targets too many tables",
    ),
    (
        FELIX,
        {"routeTableRanges": [{"min": 1, "max": 250}]},
        {"routeTableRanges": [{"min": 1, "max": 250}], "routeTableRange": {"min": 1, "max": 250}},
        "spec.routeTableRange",
        "cannot be set when `RouteTableRanges` is also set",
    ),
    (
        FELIX,
        {"bpfLogFilters": {"all": "tcp port 80", "eth0": "host 10.0.0.1"}},
        {"bpfLogFilters": {"eth*": "ip"}},
        "spec.bpfLogFilters.eth*",
        "invalid interface name",
    ),
    (
        FELIX,
        {"bpfForceTrackPacketsFromIfaces": ["docker+"]},
        {"bpfForceTrackPacketsFromIfaces": ["docker*"]},
        "spec.bpfForceTrackPacketsFromIfaces[0]",
        "invalid interface pattern",
    ),
    (
        FELIX,
        {"bpfExcludeCIDRsFromNAT": ["198.19.0.0/16", "fd00::1"]},
        {"bpfExcludeCIDRsFromNAT": ["198.19.0.0/16/1"]},
        "spec.bpfExcludeCIDRsFromNAT[0]",
        "invalid CIDR",
    ),
    (
        FELIX,
        {"bpfConntrackTimeouts": {"tcpEstablished": "1h", "tcpFinsSeen": "Auto"}},
        {"bpfConntrackTimeouts": {"udpTimeout": "forever"}},
        "spec.bpfConntrackTimeouts.udpTimeout",
        "invalid timeout",
    ),
    (FELIX, {"wireguardEnabled": True}, {"wireguardEnabled": "true"}, "spec.wireguardEnabled", "expected true or false"),
    (FELIX, {"ipipEnabled": False}, {"ipipEnable": False}, "spec.ipipEnable", "unknown field"),
    (KCC, {"logSeverityScreen": "Error"}, {"logSeverityScreen": "error"}, "spec.logSeverityScreen", "expected one of"),
    (KCC, {"healthChecks": "Disabled"}, {"healthChecks": "Off"}, "spec.healthChecks", "expected one of Enabled, Disabled"),
    (KCC, {"etcdV3CompactionPeriod": "10m"}, {"etcdV3CompactionPeriod": "10 minutes"}, "spec.etcdV3CompactionPeriod", "invalid duration"),
    (
        KCC,
        {"controllers": {"node": {"syncLabels": "Enabled"}}},
        {"controllers": {"node": {"syncLabels": "yes"}}},
        "spec.controllers.node.syncLabels",
        "expected one of",
    ),
    (
        KCC,
        {"controllers": {"loadBalancer": {"assignIPs": "RequestedServicesOnly"}}},
        {"controllers": {"loadBalancer": {"assignIPs": "Some"}}},
        "spec.controllers.loadBalancer.assignIPs",
        "expected one of AllServices",
    ),
    (KCC, {"controllers": {"policy": {"reconcilerPeriod": "5m"}}}, {"controllers": {"ipam": {}}}, "spec.controllers.ipam", "unknown field"),
    (
        KCC,
        {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled", "templates": [{"generateName": "int", "interfaceCIDRs": ["10.0.0.0/8"]}]}}}},
        {"controllers": {"node": {"hostEndpoint": {"templates": [{"interfaceCIDRs": ["10.0.0.0/8"]}]}}}},
        "spec.controllers.node.hostEndpoint.templates[0].generateName",
        "Template name must be specified",
    ),
    (
        KCC,
        {
            "controllers": {
                "node": {
                    "hostEndpoint": {
                        "templates": [{"generateName": "a", "interfaceCIDRs": ["10.0.0.0/8"]}, {"generateName": "b", "interfaceCIDRs": ["fd00::/8"]}]
                    }
                }
            }
        },
        {
            "controllers": {
                "node": {
                    "hostEndpoint": {
                        "templates": [{"generateName": "a", "interfaceCIDRs": ["10.0.0.0/8"]}, {"generateName": "a", "interfaceCIDRs": ["fd00::/8"]}]
                    }
                }
            }
        },
        "spec.controllers.node.hostEndpoint.templates[1].generateName",
        "Template name must be unique",
    ),
    (
        KCC,
        {"controllers": {"node": {"hostEndpoint": {"templates": [{"generateName": "a", "interfaceCIDRs": ["10.0.0.0/8"]}]}}}},
        {"controllers": {"node": {"hostEndpoint": {"templates": [{"generateName": "a"}]}}}},
        "spec.controllers.node.hostEndpoint.templates[0].interfaceCIDRs",
        "CIDR can not be empty",
    ),
]


@pytest.mark.parametrize("kind,good,bad,path,phrase", RULES, ids=[f"{r[0]}:{r[3]}:{i}" for i, r in enumerate(RULES)])
def test_rule(kind, good, bad, path, phrase):
    kinds.decode(doc(kind, copy.deepcopy(good)))
    error = refused(doc(kind, copy.deepcopy(bad)))
    assert error.path == path
    assert phrase in error.reason


def _go_spec_fields() -> list[str] | None:
    """The json names of FelixConfigurationSpec in Calico v3.30.0, when its source is at hand."""
    repo = Path("/work/.mirror/projectcalico+calico/repo")
    if not repo.exists():
        return None
    src = subprocess.run(
        ["git", "-C", str(repo), "show", "v3.30.0:api/pkg/apis/projectcalico/v3/felixconfig.go"], capture_output=True, text=True, check=False
    ).stdout
    if "type FelixConfigurationSpec struct" not in src:
        return None
    body = src.split("type FelixConfigurationSpec struct {", 1)[1].split("\n}\n", 1)[0]
    return re.findall(r'^\s+\w+\s+\S+\s+`json:"(\w+)', body, re.M)


def test_felix_fields_are_calicos():
    fields = _go_spec_fields()
    if fields is None:
        pytest.skip("Calico's source is not on this machine")
    assert len(fields) == 160
    assert list(config.FELIX_CONFIGURATION_SPEC.fields) == fields


def test_felix_names():
    for name in ("default", "node.rack1-host1", "my-config"):
        kinds.decode(doc(FELIX, {}, name))
    error = refused(doc(FELIX, {}, "Node_1"))
    assert error.path == "metadata.name"


def test_felix_defaults():
    _, out = kinds.decode(doc(FELIX, {}))
    assert out["spec"] == {"floatingIPs": "Disabled", "bpfConnectTimeLoadBalancing": "TCP", "bpfHostNetworkedNATWithoutCTLB": "Enabled"}
    _, out = kinds.decode(doc(FELIX, {"floatingIPs": "Enabled", "bpfConnectTimeLoadBalancing": "Disabled", "bpfHostNetworkedNATWithoutCTLB": "Disabled"}))
    assert out["spec"] == {"floatingIPs": "Enabled", "bpfConnectTimeLoadBalancing": "Disabled", "bpfHostNetworkedNATWithoutCTLB": "Disabled"}
    # The deprecated boolean decides both BPF fields, whatever else is given.
    _, out = kinds.decode(doc(FELIX, {"bpfConnectTimeLoadBalancingEnabled": True, "bpfHostNetworkedNATWithoutCTLB": "Enabled"}))
    assert out["spec"]["bpfConnectTimeLoadBalancing"] == "Enabled" and out["spec"]["bpfHostNetworkedNATWithoutCTLB"] == "Disabled"
    _, out = kinds.decode(doc(FELIX, {"bpfConnectTimeLoadBalancingEnabled": False}))
    assert out["spec"]["bpfConnectTimeLoadBalancing"] == "Disabled"


def test_felix_stored_forms():
    """What Calico stores: durations in Go's spelling, ports as numbers or ranges, enums in
    Calico's spelling, empty plain strings dropped."""
    _, out = kinds.decode(
        doc(
            FELIX,
            {
                "reportingInterval": "90s",
                "kubeNodePortRanges": ["8080", "80:80", "30000:32767"],
                "chainInsertMode": "append",
                "logPrefix": "",
                "failsafeInboundHostPorts": [{"protocol": "tcp", "port": 22}],
            },
        )
    )
    spec = out["spec"]
    assert spec["reportingInterval"] == "1m30s"
    assert spec["kubeNodePortRanges"] == [8080, 80, "30000:32767"]
    assert spec["chainInsertMode"] == "Append"
    assert "logPrefix" not in spec
    assert spec["failsafeInboundHostPorts"] == [{"protocol": "TCP", "port": 22}]


def test_kube_controllers_defaults_and_name():
    _, out = kinds.decode(doc(KCC, {"controllers": {"node": {"reconcilerPeriod": "5m"}, "loadBalancer": {}}}))
    assert out["spec"] == {
        "prometheusMetricsPort": 9094,
        "controllers": {"node": {"reconcilerPeriod": "5m0s", "leakGracePeriod": "15m0s"}, "loadBalancer": {"assignIPs": "AllServices"}},
    }
    _, out = kinds.decode(doc(KCC, {"prometheusMetricsPort": 0, "controllers": {"node": {"leakGracePeriod": "0s"}}}))
    assert out["spec"]["prometheusMetricsPort"] == 0 and out["spec"]["controllers"]["node"]["leakGracePeriod"] == "0s"
    error = refused(doc(KCC, {}, "other"))
    assert error.path == "metadata.name" and 'name other than "default"' in error.reason


def test_kube_controllers_status():
    status = {
        "runningConfig": {"controllers": {"node": {"syncLabels": "Enabled"}}, "logSeverityScreen": "Info"},
        "environmentVars": {"ENABLED_CONTROLLERS": "node"},
    }
    _, out = kinds.decode(doc(KCC, {}, status=copy.deepcopy(status)))
    assert out["status"] == status
    error = refused(doc(KCC, {}, status={"runningConfig": {"controllers": {"node": {"syncLabels": "maybe"}}}}))
    assert error.path == "status.runningConfig.controllers.node.syncLabels"


def test_cluster_information():
    kind = kinds.lookup("clusterinfo")
    assert kind.name == "ClusterInformation" and kind.writable is False
    info = doc(
        "ClusterInformation", {"clusterGUID": "c0ffee", "clusterType": "etcd,bgp", "calicoVersion": "v3.30.0", "datastoreReady": True, "variant": "Calico"}
    )
    _, out = kinds.decode(copy.deepcopy(info))
    assert out == info
    assert [c.header for c in kind.columns] == [c.header for c in kind.wide] == ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"]
    assert [c.cell(out) for c in kind.wide] == ["default", "c0ffee", "etcd,bgp", "v3.30.0", "true"]
    assert [c.cell(doc("ClusterInformation", {})) for c in kind.wide] == ["default", "", "", "", "<nil>"]
    error = refused(doc("ClusterInformation", {"ready": True}))
    assert error.path == "spec.ready"


@pytest.mark.parametrize(
    "alias,kind",
    [
        *[(a, FELIX) for a in ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs", "FelixConfiguration")],
        *[(a, KCC) for a in ("kubecontrollersconfiguration", "kubecontrollersconfigurations", "kubecontrollersconfig", "kubecontrollersconfigs")],
        *[(a, "ClusterInformation") for a in ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos")],
    ],
)
def test_aliases(alias, kind):
    assert kinds.lookup(alias).name == kind


def test_columns():
    for kind in (config.FELIX_CONFIGURATION, config.KUBE_CONTROLLERS_CONFIGURATION):
        assert [(c.header, c.cell(doc(kind.name, {}, "node.n1"))) for c in kind.columns] == [("NAME", "node.n1")]
        assert [c.header for c in kind.wide] == ["NAME"]


# A FelixConfiguration shaped like Calico's documented example, written from the field list.
FELIX_EXAMPLE = doc(
    FELIX,
    {
        "ipv6Support": False,
        "ipipMTU": 1400,
        "chainInsertMode": "Append",
        "logSeverityScreen": "Info",
        "reportingInterval": "0s",
        "bpfEnabled": False,
        "bpfLogLevel": "Off",
        "routeRefreshInterval": "1m30s",
        "defaultEndpointToHostAction": "Return",
        "failsafeInboundHostPorts": [
            {"protocol": "TCP", "port": 22},
            {"protocol": "UDP", "port": 68},
            {"protocol": "TCP", "port": 179, "net": "198.19.0.0/16"},
        ],
        "kubeNodePortRanges": ["30000:32767"],
        "wireguardEnabled": True,
        "wireguardInterfaceName": "wireguard.cali",
        "healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "1m30s"}],
        "routeTableRanges": [{"min": 1, "max": 250}],
        "floatingIPs": "Disabled",
        "bpfConnectTimeLoadBalancing": "TCP",
        "bpfHostNetworkedNATWithoutCTLB": "Enabled",
    },
)


def test_documented_felix_example_decodes_unchanged():
    kind, out = kinds.decode(copy.deepcopy(FELIX_EXAMPLE))
    assert kind.name == FELIX
    assert out == FELIX_EXAMPLE
