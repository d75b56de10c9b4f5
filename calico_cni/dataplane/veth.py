"""The veth pair of a workload: created from inside the container's namespace with the host end
placed straight into the node's, so no temporary name can ever collide with the node's interfaces;
found and deleted only when its alias names the attachment, so a DEL never removes another
workload's link."""

from __future__ import annotations

import errno
import logging
from typing import Callable, Sequence

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.netns import Netns
from calico_cni.dataplane.rtnl import Link, NetlinkError

log = logging.getLogger(__name__)

HOST_MAC = "ee:ee:ee:ee:ee:ee"


def describe_owner(link: Link) -> str:
    """Whose a link is, for a message: its alias, or that it has none."""
    return f"its alias is {link.alias!r}" if link.alias else "it has no Calico alias"


def claim_host_name(host: Netns, name: str, owned: Callable[[str], bool]) -> None:
    """Make `name` free on the node: a leftover of this same attachment is deleted; a link that
    belongs to anything else is left alone and the ADD fails."""
    rtnl = host.rtnl()
    link = rtnl.link(name)
    if link is None:
        return
    if not owned(link.alias):
        raise DataplaneError(
            f"host interface {name} already exists and belongs to another attachment",
            f"{describe_owner(link)}; it was left alone. Remove the other workload (or the stale link) first",
        )
    log.warning("deleting leftover host interface %s of this attachment (%s)", name, link.alias)
    rtnl.delete_link(link.index)


def create_pair(host: Netns, container: Netns, host_name: str, ifname: str, mtu: int) -> None:
    """Create the pair from inside the container's namespace: `ifname` there, `host_name` (with
    MAC ee:ee:ee:ee:ee:ee, still down) directly in the node's namespace. Nothing is created when
    either name is taken."""
    try:
        container.rtnl().add_veth(ifname, host_name, mtu, HOST_MAC, host.fd)
    except NetlinkError as exc:
        if exc.errno == errno.EEXIST:
            if container.rtnl().link(ifname) is not None:
                raise DataplaneError(f"interface {ifname} already exists in {container.path}") from None
            other = host.rtnl().link(host_name)
            if other is not None:
                raise DataplaneError(
                    f"host interface {host_name} was created concurrently by someone else", describe_owner(other)
                ) from None
        raise DataplaneError(f"cannot create veth pair {ifname}/{host_name}", str(exc)) from None


def read_pair(host: Netns, container: Netns, host_name: str, ifname: str) -> tuple[Link, Link]:
    """Both ends as the kernel reports them now."""
    host_link = host.rtnl().link(host_name)
    cont_link = container.rtnl().link(ifname)
    if host_link is None or cont_link is None:
        missing = host_name if host_link is None else f"{ifname} in {container.path}"
        raise DataplaneError(f"the veth pair vanished right after its creation: {missing} is missing")
    return host_link, cont_link


def delete_created_end(container: Netns, ifname: str) -> bool:
    """Delete the container end this invocation has just created (rollback); False when gone."""
    rtnl = container.rtnl()
    link = rtnl.link(ifname)
    return link is not None and link.kind == "veth" and rtnl.delete_link(link.index)


def delete_container_end(container: Netns, host: Netns, ifname: str, host_names: Sequence[str], owned: Callable[[str], bool]) -> bool:
    """Delete `ifname` in the container if it is this attachment's: a veth whose peer on the node
    is one of `host_names` carrying this attachment's alias (or none: an ADD killed before it set
    the alias). Anything else named `ifname` is left alone. False when nothing was deleted."""
    rtnl = container.rtnl()
    link = rtnl.link(ifname)
    if link is None:
        return False
    peer = host.rtnl().link(index=link.peer_index) if link.kind == "veth" and link.peer_index else None
    if peer is None or peer.name not in host_names or not (owned(peer.alias) or not peer.alias):
        log.warning("%s in %s is not this attachment's interface: left alone", ifname, container.path)
        return False
    return rtnl.delete_link(link.index)


def delete_host_end(host: Netns, name: str, owned: Callable[[str], bool]) -> bool:
    """Delete a host veth if its alias names this attachment; False when absent or someone else's."""
    rtnl = host.rtnl()
    link = rtnl.link(name)
    if link is None:
        return False
    if not owned(link.alias):
        log.info("host interface %s belongs to another attachment (%s): left alone", name, link.alias or "no alias")
        return False
    return rtnl.delete_link(link.index)
