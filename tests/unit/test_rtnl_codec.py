"""The encoders and decoders of the VXLAN work, on bytes alone (the namespace tests check them
against the kernel): VXLAN link data, neighbour/FDB messages (`rtnl_tunnels`), route flags (`rtnl`)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys

from calico_cni.dataplane import rtnl, rtnl_tunnels
from calico_cni.dataplane.rtnl import RTN_BLACKHOLE, RTNH_F_ONLINK, Rtnl, decode_link, decode_route, parse_attrs
from calico_cni.dataplane.rtnl_tunnels import (
    AF_BRIDGE,
    NTF_SELF,
    NUD_PERMANENT,
    decode_neighbour,
    decode_vxlan,
    encode_neighbour,
    encode_vxlan,
    link_vxlan,
)


def test_vxlan_data_round_trips_and_the_port_is_big_endian():
    local = ipaddress.ip_address("198.19.9.1")
    data = encode_vxlan(4096, 4789, local, 3)
    attrs = parse_attrs(data)
    assert attrs[rtnl_tunnels.IFLA_VXLAN_PORT] == b"\x12\xb5"  # 4789 in network order
    assert attrs[rtnl_tunnels.IFLA_VXLAN_ID] == struct.pack("=I", 4096)
    assert attrs[rtnl_tunnels.IFLA_VXLAN_LEARNING] == b"\x00"
    assert attrs[rtnl_tunnels.IFLA_VXLAN_LOCAL] == local.packed
    info = decode_vxlan(data)
    assert (info.vni, info.port, info.local, info.parent_index, info.learning) == (4096, 4789, local, 3, False)


def test_vxlan_ipv6_local_and_no_parent():
    local = ipaddress.ip_address("fd00:198:19:9::1")
    attrs = parse_attrs(encode_vxlan(4096, 4789, local, 0))
    assert attrs[rtnl_tunnels.IFLA_VXLAN_LOCAL6] == local.packed
    assert rtnl_tunnels.IFLA_VXLAN_LOCAL not in attrs and rtnl_tunnels.IFLA_VXLAN_LINK not in attrs
    assert decode_vxlan(encode_vxlan(4096, 4789, local, 0)).local == local


def test_a_vxlan_link_carries_its_data_and_others_none():
    def link(kind: str, data: bytes) -> bytes:
        info = rtnl.attr(rtnl.IFLA_INFO_KIND, kind.encode() + b"\0") + rtnl.attr(rtnl.IFLA_INFO_DATA, data)
        return struct.pack("=BxHiII", 0, 1, 7, 0, 0) + rtnl.attr(rtnl.IFLA_IFNAME, b"x\0") + rtnl.attr(rtnl.IFLA_LINKINFO, info)

    vxlan = link("vxlan", encode_vxlan(1, 4789, None, 0))
    assert link_vxlan(vxlan).vni == 1 and decode_link(vxlan).kind == "vxlan"
    assert link_vxlan(link("veth", b"")) is None
    # The plugin path's Link leaves the VXLAN data alone: only calico-node decodes it, when asked.
    assert not hasattr(decode_link(vxlan), "vxlan")


def test_the_plugin_path_does_not_load_the_daemon_messages():
    # Every CNI exec imports rtnl: what only calico-node sends must stay out of its import cost.
    code = (
        "import sys, calico_cni.plugins.calico, calico_cni.dataplane.wiring, calico_cni.dataplane.rtnl\n"
        "print(sorted(m for m in sys.modules if m.startswith('calico_cni.dataplane.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "calico_cni.dataplane.rtnl'" in loaded
    assert "rtnl_tunnels" not in loaded and "dataplane.tunnels" not in loaded


def test_neighbour_and_fdb_messages_round_trip():
    body = encode_neighbour(AF_BRIDGE, 5, ipaddress.ip_address("198.19.9.2"), "66:0b:0b:0b:0b:02", NUD_PERMANENT, NTF_SELF)
    assert body[:12] == struct.pack("=BxxxiHBB", AF_BRIDGE, 5, NUD_PERMANENT, NTF_SELF, 0)
    entry = decode_neighbour(body)
    assert (entry.family, entry.index, entry.ip, entry.mac, entry.permanent, entry.flags) == (AF_BRIDGE, 5, ipaddress.ip_address("198.19.9.2"), "66:0b:0b:0b:0b:02", True, NTF_SELF)
    assert decode_neighbour(encode_neighbour(socket.AF_INET6, 5, None, "66:00:00:00:00:01", 0x02, 0)).ip is None


def test_route_flags_type_and_protocol_travel():
    body = Rtnl._route_body(ipaddress.ip_network("198.18.64.0/26"), 4, ipaddress.ip_address("198.18.64.1"), 0, 254, 2048, 80, 1, RTNH_F_ONLINK)
    route = decode_route(body)
    assert (route.onlink, route.protocol, route.priority, route.oif) == (True, 80, 2048, 4)
    blackhole = decode_route(Rtnl._route_body(ipaddress.ip_network("198.18.0.0/26"), 0, None, 0, 254, None, 80, RTN_BLACKHOLE))
    assert (blackhole.type_name, blackhole.oif, blackhole.onlink) == ("blackhole", 0, False)


def test_tables_above_255_travel_as_an_attribute():
    route = decode_route(Rtnl._route_body(ipaddress.ip_network("198.18.0.0/26"), 1, None, 0, 1000))
    assert route.table == 1000

