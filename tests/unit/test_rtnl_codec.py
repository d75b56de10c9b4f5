"""rtnl's encoders and decoders for the VXLAN work, on bytes alone (the namespace tests check them
against the kernel): VXLAN link data, neighbour/FDB messages, route flags."""

from __future__ import annotations

import ipaddress
import socket
import struct

from calico_cni.dataplane import rtnl
from calico_cni.dataplane.rtnl import (
    AF_BRIDGE,
    NTF_SELF,
    NUD_PERMANENT,
    RTN_BLACKHOLE,
    RTNH_F_ONLINK,
    Rtnl,
    Route,
    decode_link,
    decode_neighbour,
    decode_route,
    decode_vxlan,
    encode_neighbour,
    encode_vxlan,
    parse_attrs,
)


def test_vxlan_data_round_trips_and_the_port_is_big_endian():
    local = ipaddress.ip_address("198.19.9.1")
    data = encode_vxlan(4096, 4789, local, 3)
    attrs = parse_attrs(data)
    assert attrs[rtnl.IFLA_VXLAN_PORT] == b"\x12\xb5"  # 4789 in network order
    assert attrs[rtnl.IFLA_VXLAN_ID] == struct.pack("=I", 4096)
    assert attrs[rtnl.IFLA_VXLAN_LEARNING] == b"\x00"
    assert attrs[rtnl.IFLA_VXLAN_LOCAL] == local.packed
    info = decode_vxlan(data)
    assert (info.vni, info.port, info.local, info.parent_index, info.learning) == (4096, 4789, local, 3, False)


def test_vxlan_ipv6_local_and_no_parent():
    local = ipaddress.ip_address("fd00:198:19:9::1")
    attrs = parse_attrs(encode_vxlan(4096, 4789, local, 0))
    assert attrs[rtnl.IFLA_VXLAN_LOCAL6] == local.packed
    assert rtnl.IFLA_VXLAN_LOCAL not in attrs and rtnl.IFLA_VXLAN_LINK not in attrs
    assert decode_vxlan(encode_vxlan(4096, 4789, local, 0)).local == local


def test_a_vxlan_link_carries_its_data_and_others_none():
    def link(kind: str, data: bytes) -> bytes:
        info = rtnl.attr(rtnl.IFLA_INFO_KIND, kind.encode() + b"\0") + rtnl.attr(rtnl.IFLA_INFO_DATA, data)
        return struct.pack("=BxHiII", 0, 1, 7, 0, 0) + rtnl.attr(rtnl.IFLA_IFNAME, b"x\0") + rtnl.attr(rtnl.IFLA_LINKINFO, info)

    assert decode_link(link("vxlan", encode_vxlan(1, 4789, None, 0))).vxlan.vni == 1
    assert decode_link(link("veth", b"")).vxlan is None


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


def test_route_keeps_its_old_constructor():
    route = Route(ipaddress.ip_network("198.18.0.0/26"), 1, None, 254, 0, 1, 3, 0)
    assert route.flags == 0 and not route.onlink


def test_calico_metric_is_above_ipv6_default():
    assert rtnl.CALICO_METRIC > 1024
    assert AF_BRIDGE == getattr(socket, "AF_BRIDGE", 7)
