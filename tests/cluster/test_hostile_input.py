"""Resources calicoctl would refuse, written straight into etcd (as any other tool could): they
never reach BIRD, the daemon's log names them, and the rest of the configuration still applies."""

from __future__ import annotations

import json

import pytest

from tests.cluster_support import wait_for
from tests.pools import create_pool

PEERS = "/calico/resources/v3/projectcalico.org/bgppeers/"


def peer(name: str, **spec) -> bytes:
    return json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}).encode()


HOSTILE = {
    "bad-ip": ({"peerIP": "198.19.200.300", "asNumber": 65010}, "198.19.200.300"),
    "bad-as": ({"peerIP": "198.19.200.201", "asNumber": 4294967296}, "4294967296"),
    "bad-selector": ({"nodeSelector": "all(", "peerIP": "198.19.200.202", "asNumber": 65010}, "198.19.200.202"),
    "injection": ({"peerIP": "198.19.200.203", "asNumber": "65010; } protocol static evil { ipv4; route 0.0.0.0/0 blackhole; "}, "evil"),
    "secret": ({"peerIP": "198.19.200.204", "asNumber": 65010, "password": {"secretKeyRef": {"name": "s", "key": "k"}}}, "198.19.200.204"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_peer_never_reaches_bird_and_is_reported(cluster, store, etcd_endpoint, name):
    create_pool(store, "v4", "198.18.46.0/24", 26)
    spec, marker = HOSTILE[name]
    one, two = cluster.add_node(), cluster.add_node()
    good = "198.19.200.205"
    assert store.client.commit([], puts=[(PEERS + name, peer(name, **spec)), (PEERS + "good", peer("good", peerIP=good, asNumber=65010))])[0]
    config = one.state_dir / "bird.cfg"
    wait_for("the good peer in BIRD's configuration", lambda: config.exists() and good in config.read_text(), 10)
    assert marker not in config.read_text()
    assert wait_for(f"the daemon's log to name BGPPeer({name})", lambda: f"BGPPeer({name})" in one.log.read_text(), 10)
    # BIRD runs the configuration with the good peer (it was loaded, not only written).
    assert f"Global_{good.replace('.', '_')}" in one.birdc("show", "protocols")
    assert two.proc.poll() is None and one.proc.poll() is None
