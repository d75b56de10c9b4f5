"""dataplane.routing.add_host_routes when BIRD adds a route to the pod's address between the
listing and the add (a borrowed /32 learnt from a peer at that moment): the add meets EEXIST, finds
only the daemon's route, and replaces it; a workload's route there still refuses. The moment cannot
be provoked from outside, so the listing is wrapped to add the route right after it."""

from __future__ import annotations

import ipaddress
import os

import pytest

from calico_cni.dataplane import routing
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.rtnl import Rtnl
from tests import netns


@pytest.fixture
def namespace():
    name = netns.add(f"{netns.PREFIX}hostroutes-{os.getpid()}")
    for link in ("cali0", "other0"):
        netns.ip("-n", name, "link", "add", link, "type", "veth", "peer", "name", f"{link}p")
        netns.ip("-n", name, "link", "set", link, "up")
    try:
        with netns.inside(name):
            yield name
    finally:
        netns.delete(name)


def routes_to(ns: str, dst: str) -> list[str]:
    return netns.ip("-n", ns, "-4", "route", "show", dst).stdout.split("\n")[0:1]


@pytest.mark.parametrize("protocol, refused", [("bird", False), ("boot", True)])
def test_a_route_added_between_listing_and_adding(namespace, monkeypatch, protocol, refused):
    with Rtnl.open() as rtnl:
        real = rtnl.routes

        def listing_then_route(version, *args, **kwargs):
            listed = real(version, *args, **kwargs)
            if not getattr(listing_then_route, "done", False):
                listing_then_route.done = True
                netns.ip("-n", namespace, "route", "add", "198.18.5.7/32", "dev", "other0", "proto", protocol)
            return listed

        monkeypatch.setattr(rtnl, "routes", listing_then_route)
        link = rtnl.link("cali0")
        address = ipaddress.ip_interface("198.18.5.7/32")
        if refused:
            with pytest.raises(DataplaneError, match="already has a route to 198.18.5.7/32 via dev other0"):
                routing.add_host_routes(rtnl, link, [address])
            assert "dev other0" in routes_to(namespace, "198.18.5.7")[0]
        else:
            routing.add_host_routes(rtnl, link, [address])
            line = routes_to(namespace, "198.18.5.7")[0]
            assert "dev cali0" in line and "proto bird" not in line, line
