"""FelixConfiguration, KubeControllersConfiguration and ClusterInformation: the cluster's
configuration resources. Every field of Calico v3.30's FelixConfigurationSpec is listed with its
type (the list was extracted from the Go struct, so none is missed); the rules are those Calico's
validator and clients apply in etcd mode, and, where Calico's Go validator does not check an
enumerated value but its API schema (the CRD) does, the CRD's choices. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from calico_cni.model import checks
from calico_cni.model.checks import ip_family, parse_cidr_or_ip
from calico_cni.model.kinds.metadata import name_of
from calico_cni.model.kinds.routing import (
    LOG_LEVELS,
    GoDuration,
    OrEmpty,
    any_cidr,
    ipv4,
    ipv6,
    omit_empty,
    resource_name,
)
from calico_cni.model.schema import Bool, Column, Enum, Field, Int, Invalid, Kind, List, Map, Obj, Str, join

# --- checks of this module ---


def go_regexp(text: str) -> str | None:
    """A regular expression (Go's RE2; Python's `re` reads the same common syntax)."""
    try:
        re.compile(text)
    except re.error as exc:
        return f"invalid regular expression {text!r}: {exc}"
    return None


_KEY_VALUE = re.compile(r"^\s*(\w+)=(.*)\Z")


def key_value_list(text: str) -> str | None:
    """A comma-separated list of key=value (featureGates, featureDetectOverride); empty items are
    allowed."""
    for item in text.split(","):
        if item and not _KEY_VALUE.match(item):
            return f"invalid item {item!r}: expected a comma-separated list of key=value"
    return None


_PROMETHEUS_HOST = re.compile(r"^[a-zA-Z0-9:._+-]{1,64}\Z")
_IFACE_FILTER = re.compile(r"^[a-zA-Z0-9:._+-]{1,15}\Z")


def prometheus_host(text: str) -> str | None:
    """A host for Prometheus to bind to: an address or a name of at most 64 characters."""
    if not _PROMETHEUS_HOST.match(text):
        return f"invalid host {text!r}: at most 64 letters, digits, ':', '.', '_', '+' or '-'"
    return None


def iface_filter(text: str) -> str | None:
    """An interface name or prefix pattern such as `docker+`."""
    if not _IFACE_FILTER.match(text):
        return f"invalid interface pattern {text!r}: at most 15 letters, digits, ':', '.', '_', '+' or '-'"
    return None


_REGION_PREFIX = "openstack-region-"


def openstack_region(text: str) -> str | None:
    """Becomes part of a namespace name: a DNS label short enough for the prefix."""
    limit = 63 - len(_REGION_PREFIX)
    if len(text) > limit:
        return f"OpenstackRegion is too long: at most {limit} characters"
    if checks.dns_label(text):
        return f"OpenstackRegion must be a valid DNS label: {text!r} is not (lower-case letters, digits and '-')"
    return None


def external_node_cidr(text: str) -> str | None:
    """An `externalNodesList` entry: an IPv4 network or address (Felix takes no IPv6 here)."""
    parsed = parse_cidr_or_ip(text)
    if parsed is None:
        return f"externalNodesList has invalid CIDR(s): {text!r}"
    if ip_family(parsed[0]) != 4:
        return f"externalNodesList has invalid IPv6 CIDR {text!r}: only IPv4 is supported"
    return None


_CONNTRACK_TIMEOUT = re.compile(r"^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)\Z")


def conntrack_timeout(text: str) -> str | None:
    """A BPF conntrack timeout: a duration such as 30s or 1h, or Auto."""
    if not _CONNTRACK_TIMEOUT.match(text):
        return f"invalid timeout {text!r}: expected a duration such as 30s or 1h, or Auto"
    return None


_PORT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}\Z")
_PORT_RANGE = re.compile(r"^(\d+):(\d+)\Z")


@dataclass(frozen=True)
class Port(Field):
    """A port as Calico's numorstring.Port reads it: a number, "min:max" or a named port. Stored
    as Calico writes it back: a single port as a number, a range as "min:max"."""

    def decode(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            low = high = value
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            low = high = int(value)
        elif isinstance(value, str) and _PORT_RANGE.match(value):
            low, high = (int(p) for p in value.split(":"))
        elif isinstance(value, str) and _PORT_NAME.match(value):
            return value
        else:
            raise Invalid(path, f"invalid port {value!r}: expected a number, a range min:max, or a port name")
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise Invalid(path, f"port range invalid {value!r}: port number must be between 1 and 65535")
        if low > high:
            raise Invalid(path, f"port range invalid {value!r}: the minimum {low} is greater than the maximum {high}")
        return low if low == high else f"{low}:{high}"


PORT = Port()

# Protocol: Calico's validator wants TCP, UDP or SCTP in capitals; Felix's own defaults are written
# in lower case, so any case is accepted here and stored in capitals.
PROTO_PORT = Obj({"protocol": Enum("TCP", "UDP", "SCTP", fold=True), "port": Int(0, 65535), "net": OrEmpty(Str(any_cidr))})

_HEALTH_NAME = re.compile(r"^[a-zA-Z0-9_ -]+\Z")


def _health_timeout_check(override: dict, path: str) -> None:
    if override.get("timeout", "").startswith("-"):
        raise Invalid(join(path, "timeout"), f"Timeout should not be negative: got {override['timeout']}")


HEALTH_TIMEOUT_OVERRIDE = Obj(
    {
        "name": Str(lambda v: None if _HEALTH_NAME.match(v) else f"invalid name {v!r}: letters, digits, '_', ' ' and '-'"),
        "timeout": GoDuration(),
    },
    required=("name",),
    check=_health_timeout_check,
)


def _route_table_range(rng: dict, path: str) -> None:
    low, high = rng.get("min", 0), rng.get("max", 0)
    if not (1 <= low <= high <= 250):
        raise Invalid(path, f"RouteTableRange must be a range of route table indices within 1..250, got {low}..{high}")


def _route_table_id_range(rng: dict, path: str) -> None:
    low, high = rng.get("min", 0), rng.get("max", 0)
    if low > high:
        raise Invalid(path, f"RouteTableRange min value cannot be greater than max value ({low} > {high})")
    if low <= 0:
        raise Invalid(join(path, "min"), "RouteTableRange cannot target indices < 1")
    if high > 0xFFFFFFFF:
        raise Invalid(join(path, "max"), "RouteTableRange max index too high: at most 4294967295")


ROUTE_TABLE_RANGE = Obj({"min": Int(), "max": Int()}, check=_route_table_range)
ROUTE_TABLE_ID_RANGE = Obj({"min": Int(), "max": Int()}, check=_route_table_id_range)
ROUTE_TABLES_MAX = 0xFFFF

BPF_CONNTRACK_TIMEOUTS = Obj(
    {
        key: Str(conntrack_timeout)
        for key in ("creationGracePeriod", "tcpSynSent", "tcpEstablished", "tcpFinsSeen", "tcpResetSeen", "udpTimeout", "genericTimeout", "icmpTimeout")
    }
)


# --- FelixConfiguration ---

# Every field of FelixConfigurationSpec (v3.30.0), in the Go struct's order. Where Calico checks
# nothing (a free string, a pointer to a number) the type alone is checked.
FELIX_CONFIGURATION_SPEC = Obj(
    {
        "useInternalDataplaneDriver": Bool(),
        "dataplaneDriver": Str(),
        "dataplaneWatchdogTimeout": GoDuration(),
        "ipv6Support": Bool(),
        "routeRefreshInterval": GoDuration(),
        "interfaceRefreshInterval": GoDuration(),
        "iptablesRefreshInterval": GoDuration(),
        "iptablesPostWriteCheckInterval": GoDuration(),
        "iptablesLockFilePath": Str(),
        "iptablesLockTimeout": GoDuration(),
        "iptablesLockProbeInterval": GoDuration(),
        "featureDetectOverride": Str(key_value_list),
        "featureGates": Str(key_value_list),
        "ipsetsRefreshInterval": GoDuration(),
        "maxIpsetSize": Int(),
        "iptablesBackend": OrEmpty(Enum("Legacy", "NFT", "Auto")),
        "xdpRefreshInterval": GoDuration(),
        "netlinkTimeout": GoDuration(),
        "metadataAddr": Str(),
        "metadataPort": Int(),
        "openstackRegion": OrEmpty(Str(openstack_region)),
        "interfacePrefix": Str(),
        "interfaceExclude": Str(),
        "chainInsertMode": OrEmpty(Enum("Insert", "Append", fold=True)),
        "defaultEndpointToHostAction": OrEmpty(Enum("Drop", "Accept", "Return")),
        "iptablesFilterAllowAction": OrEmpty(Enum("Accept", "Return")),
        "iptablesMangleAllowAction": OrEmpty(Enum("Accept", "Return")),
        "iptablesFilterDenyAction": OrEmpty(Enum("Drop", "Reject")),
        "logPrefix": Str(),
        "logFilePath": Str(),
        "logSeverityFile": OrEmpty(Enum(*LOG_LEVELS)),
        "logSeverityScreen": OrEmpty(Enum(*LOG_LEVELS)),
        "logSeveritySys": OrEmpty(Enum(*LOG_LEVELS)),
        "logDebugFilenameRegex": OrEmpty(Str(go_regexp)),
        "ipipEnabled": Bool(),
        "ipipMTU": Int(),
        "vxlanEnabled": Bool(),
        "vxlanMTU": Int(),
        "vxlanMTUV6": Int(),
        "vxlanPort": Int(),
        "vxlanVNI": Int(),
        "allowVXLANPacketsFromWorkloads": Bool(),
        "allowIPIPPacketsFromWorkloads": Bool(),
        "reportingInterval": GoDuration(),
        "reportingTTL": GoDuration(),
        "endpointReportingEnabled": Bool(),
        "endpointReportingDelay": GoDuration(),
        "endpointStatusPathPrefix": Str(),
        "iptablesMarkMask": Int(0, 4294967295),
        "disableConntrackInvalidCheck": Bool(),
        "healthEnabled": Bool(),
        "healthHost": Str(),
        "healthPort": Int(),
        "healthTimeoutOverrides": List(HEALTH_TIMEOUT_OVERRIDE),
        "prometheusMetricsEnabled": Bool(),
        "prometheusMetricsHost": OrEmpty(Str(prometheus_host)),
        "prometheusMetricsPort": Int(),
        "prometheusGoMetricsEnabled": Bool(),
        "prometheusProcessMetricsEnabled": Bool(),
        "prometheusWireGuardMetricsEnabled": Bool(),
        "failsafeInboundHostPorts": List(PROTO_PORT),
        "failsafeOutboundHostPorts": List(PROTO_PORT),
        "kubeNodePortRanges": List(PORT),
        "policySyncPathPrefix": Str(),
        "usageReportingEnabled": Bool(),
        "usageReportingInitialDelay": GoDuration(),
        "usageReportingInterval": GoDuration(),
        "natPortRange": PORT,
        "natOutgoingAddress": OrEmpty(Str(ipv4)),
        "deviceRouteSourceAddress": OrEmpty(Str(ipv4)),
        "deviceRouteSourceAddressIPv6": OrEmpty(Str(ipv6)),
        "deviceRouteProtocol": Int(),
        "removeExternalRoutes": Bool(),
        "ipForwarding": OrEmpty(Enum("Enabled", "Disabled")),
        "externalNodesList": List(Str(external_node_cidr)),
        "debugMemoryProfilePath": Str(),
        "debugDisableLogDropping": Bool(),
        "debugSimulateCalcGraphHangAfter": GoDuration(),
        "debugSimulateDataplaneHangAfter": GoDuration(),
        "debugSimulateDataplaneApplyDelay": GoDuration(),
        "debugHost": Str(),
        "debugPort": Int(0, 65535),
        "iptablesNATOutgoingInterfaceFilter": OrEmpty(Str(iface_filter)),
        "sidecarAccelerationEnabled": Bool(),
        "xdpEnabled": Bool(),
        "genericXDPEnabled": Bool(),
        "nftablesMode": Enum("Disabled", "Enabled", "Auto"),
        "nftablesRefreshInterval": GoDuration(),
        "nftablesFilterAllowAction": OrEmpty(Enum("Accept", "Return")),
        "nftablesMangleAllowAction": OrEmpty(Enum("Accept", "Return")),
        "nftablesFilterDenyAction": OrEmpty(Enum("Drop", "Reject")),
        "nftablesMarkMask": Int(0, 4294967295),
        "bpfEnabled": Bool(),
        "bpfDisableUnprivileged": Bool(),
        "bpfLogLevel": OrEmpty(Enum("Debug", "Info", "Off")),
        "bpfConntrackLogLevel": OrEmpty(Enum("Off", "Debug")),
        "bpfConntrackMode": Enum("Auto", "Userspace", "BPFProgram"),
        "bpfConntrackTimeouts": BPF_CONNTRACK_TIMEOUTS,
        "bpfLogFilters": Map(Str(), key=checks.interface_name),
        "bpfCTLBLogFilter": Str(),
        "bpfDataIfacePattern": OrEmpty(Str(go_regexp)),
        "bpfL3IfacePattern": OrEmpty(Str(go_regexp)),
        "bpfConnectTimeLoadBalancingEnabled": Bool(),
        "bpfConnectTimeLoadBalancing": Enum("TCP", "Enabled", "Disabled"),
        "bpfHostNetworkedNATWithoutCTLB": Enum("Enabled", "Disabled"),
        "bpfExternalServiceMode": OrEmpty(Enum("Tunnel", "DSR")),
        "bpfDSROptoutCIDRs": List(Str(any_cidr)),
        "bpfExtToServiceConnmark": Int(0, 4294967295),
        "bpfKubeProxyIptablesCleanupEnabled": Bool(),
        "bpfKubeProxyMinSyncPeriod": GoDuration(),
        "bpfKubeProxyEndpointSlicesEnabled": Bool(),
        "bpfPSNATPorts": PORT,
        "bpfMapSizeNATFrontend": Int(),
        "bpfMapSizeNATBackend": Int(),
        "bpfMapSizeNATAffinity": Int(),
        "bpfMapSizeRoute": Int(),
        "bpfMapSizeConntrack": Int(),
        "bpfMapSizePerCpuConntrack": Int(),
        "bpfMapSizeConntrackScaling": OrEmpty(Enum("Disabled", "DoubleIfFull", fold=True)),
        "bpfMapSizeConntrackCleanupQueue": Int(1, None),
        "bpfMapSizeIPSets": Int(),
        "bpfMapSizeIfState": Int(),
        "bpfHostConntrackBypass": Bool(),
        "bpfEnforceRPF": OrEmpty(Enum("Disabled", "Strict", "Loose", fold=True)),
        "bpfPolicyDebugEnabled": Bool(),
        "bpfForceTrackPacketsFromIfaces": List(Str(iface_filter)),
        "bpfDisableGROForIfaces": OrEmpty(Str(go_regexp)),
        "bpfExcludeCIDRsFromNAT": List(Str(any_cidr)),
        "bpfExportBufferSizeMB": Int(),
        "flowLogsPolicyEvaluationMode": Enum("None", "Continuous"),
        "bpfRedirectToPeer": OrEmpty(Enum("Enabled", "Disabled", "L2Only")),
        "flowLogsFlushInterval": GoDuration(),
        "flowLogsCollectorDebugTrace": Bool(),
        "flowLogsGoldmaneServer": Str(),
        "bpfProfiling": OrEmpty(Enum("Enabled", "Disabled")),
        "routeSource": OrEmpty(Enum("WorkloadIPs", "CalicoIPAM", fold=True)),
        "routeTableRanges": List(ROUTE_TABLE_ID_RANGE),
        "routeTableRange": ROUTE_TABLE_RANGE,
        "routeSyncDisabled": Bool(),
        "wireguardEnabled": Bool(),
        "wireguardEnabledV6": Bool(),
        "wireguardThreadingEnabled": Bool(),
        "wireguardListeningPort": Int(1, 65535),
        "wireguardListeningPortV6": Int(1, 65535),
        "wireguardRoutingRulePriority": Int(1, 32765),
        "wireguardInterfaceName": OrEmpty(Str(checks.interface_or_any)),
        "wireguardInterfaceNameV6": OrEmpty(Str(checks.interface_or_any)),
        "wireguardMTU": Int(),
        "wireguardMTUV6": Int(),
        "wireguardHostEncryptionEnabled": Bool(),
        "wireguardKeepAlive": GoDuration(),
        "awsSrcDstCheck": Enum("DoNothing", "Enable", "Disable"),
        "serviceLoopPrevention": OrEmpty(Enum("Drop", "Reject", "Disabled")),
        "workloadSourceSpoofing": OrEmpty(Enum("Disabled", "Any")),
        "mtuIfacePattern": OrEmpty(Str(go_regexp)),
        "floatingIPs": Enum("Enabled", "Disabled"),
        "windowsManageFirewallRules": Enum("Enabled", "Disabled"),
        "goGCThreshold": Int(-1, None),
        "goMemoryLimitMB": Int(-1, None),
        "goMaxProcs": Int(-1, None),
    }
)

# The non-pointer string fields: "" is not stored (Go's omitempty).
_FELIX_PLAIN_STRINGS = (
    "dataplaneDriver",
    "iptablesLockFilePath",
    "featureDetectOverride",
    "featureGates",
    "metadataAddr",
    "openstackRegion",
    "interfacePrefix",
    "interfaceExclude",
    "chainInsertMode",
    "defaultEndpointToHostAction",
    "iptablesFilterAllowAction",
    "iptablesMangleAllowAction",
    "iptablesFilterDenyAction",
    "logPrefix",
    "logFilePath",
    "logSeverityFile",
    "logSeverityScreen",
    "logSeveritySys",
    "logDebugFilenameRegex",
    "endpointStatusPathPrefix",
    "prometheusMetricsHost",
    "policySyncPathPrefix",
    "natOutgoingAddress",
    "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6",
    "ipForwarding",
    "debugMemoryProfilePath",
    "iptablesNATOutgoingInterfaceFilter",
    "nftablesFilterAllowAction",
    "nftablesMangleAllowAction",
    "nftablesFilterDenyAction",
    "bpfLogLevel",
    "bpfConntrackLogLevel",
    "bpfCTLBLogFilter",
    "bpfDataIfacePattern",
    "bpfL3IfacePattern",
    "bpfExternalServiceMode",
    "bpfMapSizeConntrackScaling",
    "bpfEnforceRPF",
    "bpfDisableGROForIfaces",
    "bpfRedirectToPeer",
    "bpfProfiling",
    "routeSource",
    "wireguardInterfaceName",
    "wireguardInterfaceNameV6",
    "serviceLoopPrevention",
    "workloadSourceSpoofing",
    "mtuIfacePattern",
)


def _prepare_felix_configuration(doc: dict) -> None:
    """Calico's etcd-mode defaults (floatingIPs Disabled, bpfConnectTimeLoadBalancing TCP,
    bpfHostNetworkedNATWithoutCTLB Enabled; the deprecated bpfConnectTimeLoadBalancingEnabled,
    when set, decides both BPF fields) and the rules across fields."""
    spec = doc["spec"]
    omit_empty(spec, _FELIX_PLAIN_STRINGS)
    spec.setdefault("floatingIPs", "Disabled")
    spec.setdefault("bpfConnectTimeLoadBalancing", "TCP")
    spec.setdefault("bpfHostNetworkedNATWithoutCTLB", "Enabled")
    if "bpfConnectTimeLoadBalancingEnabled" in spec:
        spec["bpfHostNetworkedNATWithoutCTLB"] = "Disabled"
        spec["bpfConnectTimeLoadBalancing"] = "Enabled" if spec["bpfConnectTimeLoadBalancingEnabled"] else "Disabled"
    ranges = spec.get("kubeNodePortRanges")
    if ranges is not None:
        if len(ranges) > 7:
            raise Invalid("spec.kubeNodePortRanges", f"node port ranges list is too long (max 7), got {len(ranges)}")
        for i, port in enumerate(ranges):
            if isinstance(port, str) and not _PORT_RANGE.match(port):
                raise Invalid(join("spec.kubeNodePortRanges", i), f"node port ranges should not contain named ports ({port!r})")
    if "routeTableRange" in spec and "routeTableRanges" in spec:
        raise Invalid("spec.routeTableRange", "RouteTableRange cannot be set when `RouteTableRanges` is also set")
    if "routeTableRanges" in spec:
        tables = sum(r.get("max", 0) - r.get("min", 0) + 1 for r in spec["routeTableRanges"])
        if tables > ROUTE_TABLES_MAX:
            raise Invalid("spec.routeTableRanges", f"RouteTableRanges targets too many tables: {tables}, at most {ROUTE_TABLES_MAX}")


FELIX_CONFIGURATION = Kind(
    name="FelixConfiguration",
    plural="felixconfigurations",
    aliases=("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
    spec=FELIX_CONFIGURATION_SPEC,
    prepare=_prepare_felix_configuration,
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of),),
)

# --- KubeControllersConfiguration ---

ENABLED_DISABLED = OrEmpty(Enum("Enabled", "Disabled"))
RECONCILER = Obj({"reconcilerPeriod": GoDuration()})

HOST_ENDPOINT_TEMPLATE = Obj(
    {
        "generateName": OrEmpty(Str(resource_name)),
        "interfaceCIDRs": List(Str(any_cidr)),
        "labels": Map(Str(checks.label_value), key=checks.label_key),
        "nodeSelector": OrEmpty(Str(checks.selector)),
    }
)

KUBE_CONTROLLERS_CONFIGURATION_SPEC = Obj(
    {
        "logSeverityScreen": OrEmpty(Enum(*LOG_LEVELS)),
        "healthChecks": ENABLED_DISABLED,
        "etcdV3CompactionPeriod": GoDuration(),
        "prometheusMetricsPort": Int(),
        "controllers": Obj(
            {
                "node": Obj(
                    {
                        "reconcilerPeriod": GoDuration(),
                        "syncLabels": ENABLED_DISABLED,
                        "hostEndpoint": Obj(
                            {
                                "autoCreate": ENABLED_DISABLED,
                                "createDefaultHostEndpoint": ENABLED_DISABLED,
                                "templates": List(HOST_ENDPOINT_TEMPLATE),
                            }
                        ),
                        "leakGracePeriod": GoDuration(),
                    }
                ),
                "policy": RECONCILER,
                "workloadEndpoint": RECONCILER,
                "serviceAccount": RECONCILER,
                "namespace": RECONCILER,
                "loadBalancer": Obj({"assignIPs": OrEmpty(Enum("AllServices", "RequestedServicesOnly"))}),
            }
        ),
        "debugProfilePort": Int(-(2**31), 2**31 - 1),
    }
)


def _prepare_kube_controllers_configuration(doc: dict) -> None:
    """Calico's defaults (Prometheus port 9094; the node controller's leak grace period 15m; the
    load-balancer controller assigns to AllServices) and its host-endpoint template rules."""
    spec = doc["spec"]
    spec.setdefault("prometheusMetricsPort", 9094)
    controllers = spec.setdefault("controllers", {})
    node = controllers.get("node")
    if node is not None:
        node.setdefault("leakGracePeriod", "15m0s")
    balancer = controllers.get("loadBalancer")
    if balancer is not None and not balancer.get("assignIPs"):
        balancer["assignIPs"] = "AllServices"
    templates = ((node or {}).get("hostEndpoint") or {}).get("templates") or []
    seen: set[str] = set()
    for i, template in enumerate(templates):
        path = join("spec.controllers.node.hostEndpoint.templates", i)
        generated = template.get("generateName", "")
        if not generated:
            raise Invalid(join(path, "generateName"), "Template name must be specified")
        if len(generated) > 253:
            raise Invalid(join(path, "generateName"), "Template name must be shorter than 253 characters")
        if generated in seen:
            raise Invalid(join(path, "generateName"), f"Template name must be unique: {generated!r} is used twice")
        seen.add(generated)
        if not template.get("interfaceCIDRs"):
            raise Invalid(join(path, "interfaceCIDRs"), "CIDR can not be empty: give the interface CIDRs the template matches")
        # Calico v3.30 means to default an empty nodeSelector to all() but changes a copy, so
        # nothing is stored: an absent selector already selects every node.


def _default_only(what: str):
    def check(name: str) -> str | None:
        if name != "default":
            return f'Cannot create a {what} resource with a name other than "default" (got {name!r})'
        return None

    return check


KUBE_CONTROLLERS_CONFIGURATION = Kind(
    name="KubeControllersConfiguration",
    plural="kubecontrollersconfigurations",
    aliases=("kubecontrollersconfiguration", "kubecontrollersconfigurations", "kubecontrollersconfig", "kubecontrollersconfigs"),
    spec=KUBE_CONTROLLERS_CONFIGURATION_SPEC,
    status=Obj({"runningConfig": KUBE_CONTROLLERS_CONFIGURATION_SPEC, "environmentVars": Map(Str())}),
    name_check=_default_only("Kube Controllers Configuration"),
    prepare=_prepare_kube_controllers_configuration,
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of),),
)

# --- ClusterInformation ---


def _ready(doc: dict) -> str:
    """DATASTOREREADY as calicoctl's template prints the optional flag ("<nil>" when unset)."""
    value = (doc.get("spec") or {}).get("datastoreReady")
    return "<nil>" if value is None else ("true" if value else "false")


def _info(key: str):
    return lambda doc: (doc.get("spec") or {}).get(key, "")


_CLUSTER_INFORMATION_COLUMNS = (
    Column("NAME", name_of),
    Column("CLUSTERGUID", _info("clusterGUID")),
    Column("CLUSTERTYPE", _info("clusterType")),
    Column("CALICOVERSION", _info("calicoVersion")),
    Column("DATASTOREREADY", _ready),
)

# Written by calico/node at start-up; calicoctl only shows it (create, apply, replace and delete
# are refused: "operation not supported").
CLUSTER_INFORMATION = Kind(
    name="ClusterInformation",
    plural="clusterinformations",
    aliases=("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
    spec=Obj({"clusterGUID": Str(), "clusterType": Str(), "calicoVersion": Str(), "datastoreReady": Bool(), "variant": Str()}),
    name_check=_default_only("Cluster Information"),
    writable=False,
    columns=_CLUSTER_INFORMATION_COLUMNS,
    wide=_CLUSTER_INFORMATION_COLUMNS,
)

KINDS = (FELIX_CONFIGURATION, KUBE_CONTROLLERS_CONFIGURATION, CLUSTER_INFORMATION)
