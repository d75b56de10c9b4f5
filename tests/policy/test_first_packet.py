"""Policy from a pod's first packet, over a pod's life and against hostile records (issue 18), with
real traffic on one node enforcing policy (tests/policy_harness.py):

- a pod created under a deny policy never gets a forbidden packet through, in either direction:
  traffic is sent from before its ADD starts until after it returns, and the far end counts it;
- an established flow survives a policy change that forbids new ones;
- DEL removes the endpoint's chains and its addresses' conntrack entries;
- policies written straight to etcd that calicoctl refuses are skipped with a report, the others
  keep working;
- a pod allowed by policy (in a tier that drops the rest) answers from its very first packet;
- with calico-node stopped after it enforced policy, an exec'd ADD fails with error 11, and the
  tables keep enforcing, also while calico-node starts again until its first full sync (last: it
  restarts the module's calico-node).
"""

from __future__ import annotations

import json
import socket
import threading
import time

from calico_cni.node.nft_policy import endpoint_chains
from tests import netns
from tests.calico_support import in_ns
from tests.policy_harness import probe as P
from tests.policy_harness import ALLOWED_TIMEOUT, Scope, document, etcd_client, expect, ping, socket_in, tcp, udp, wait_enforced

ALLOW = {"action": "Allow"}
DENY = {"action": "Deny"}
POLICIES = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/"


class Blaster:
    """UDP datagrams and TCP connection attempts from a namespace to a target, every few
    milliseconds, in a thread (its socket made in the namespace before the namespace has any
    address: sends fail until the pod is wired, then go out)."""

    def __init__(self, ns: str, address: str, udp_port: int = 5000, tcp_port: int = 80) -> None:
        self.ns, self.address, self.udp_port, self.tcp_port = ns, address, udp_port, tcp_port
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket_in(self.ns, family, socket.SOCK_DGRAM) as s:
            while not self.stop_event.is_set():
                try:
                    s.sendto(b"blast", (self.address, self.udp_port))
                    self.sent += 1
                except OSError:
                    pass
                with socket_in(self.ns, family, socket.SOCK_STREAM) as t:
                    t.setblocking(False)
                    try:
                        t.connect_ex((self.address, self.tcp_port))
                    except OSError:
                        pass
                    time.sleep(0.005)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


class Prober:
    """A probe run again and again in a thread until `stop`; every False is recorded."""

    def __init__(self, probe) -> None:
        self.probe, self.runs, self.failures = probe, 0, []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            if not self.probe():
                self.failures.append(time.monotonic())
            self.runs += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def chain_in_kernel(pn: Scope, chain: str) -> bool:
    return chain in pn.pn.chains("ip") and chain in pn.pn.chains("ip6")


def test_new_pod_under_egress_deny_never_sends_a_packet(pn):
    """Traffic from inside the new pod's namespace starts before its ADD: none reaches the target."""
    target = pn.pod({"app": "fp-target"})
    pn.policy("fp-muted", {"selector": "role == 'muted'", "types": ["Egress"], "egress": [DENY]})
    # "Already in place": a first muted pod shows the policy reached calico-node (a policy's chain
    # is in the kernel only while it applies to a local endpoint).
    witness = pn.pod({"role": "muted"}, v6=False, server=False)
    chain = pn.policy_chain("GlobalNetworkPolicy", "fp-muted", "Egress")
    wait_enforced(lambda: chain_in_kernel(pn, chain), True, "the policy's chain in the kernel", hold=0)
    assert not udp(witness, target, 5000)
    for attempt in range(3):
        ns = netns.add(f"{netns.PREFIX}fpm{attempt}-{target.ns[-8:]}")
        blasters = [Blaster(ns, target.v4), Blaster(ns, target.v6)]
        try:
            pod = pn.pod({"role": "muted"}, ns=ns)
            expect(denied=[P(udp, pod, target, 5000), P(udp, pod, target, 5000, v6=True), P(tcp, pod, target, 80, v6=True), P(ping, pod, target)])
            time.sleep(0.3)  # the blasters keep sending after ADD returned
        finally:
            for b in blasters:
                b.stop()
        assert sum(b.sent for b in blasters) > 0, "the blasters sent nothing once the pod was wired"
        assert target.server.seen(source=pod.v4) == 0 and target.server.seen(source=pod.v6) == 0, f"attempt {attempt}: a packet of the muted pod got through"
    # The control: relabelled, the same pod reaches the target.
    pn.label(pod, "role", "loud")
    wait_enforced(lambda: udp(pod, target, 5000), True, "the pod once no longer muted")
    assert target.server.seen(source=pod.v4) > 0


def test_new_pod_under_ingress_deny_never_receives_a_packet(pn):
    """A sender aims at the address the new pod will get (CNI_ARGS IP=) from before its ADD; the
    pod's server, running before ADD, counts nothing."""
    sender = pn.pod({"app": "fp-sender"})
    pn.policy("fp-sealed", {"selector": "role == 'sealed'", "types": ["Ingress"], "ingress": [DENY]})
    pn.pod({"role": "sealed"}, v6=False, server=False)  # the policy reached calico-node (see above)
    chain = pn.policy_chain("GlobalNetworkPolicy", "fp-sealed", "Ingress")
    wait_enforced(lambda: chain_in_kernel(pn, chain), True, "the policy's chain in the kernel", hold=0)
    address = "198.18.70.190"
    blaster = Blaster(sender.ns, address)
    try:
        pod = pn.pod({"role": "sealed"}, v6=False, IP=address)
        assert pod.v4 == address
        expect(denied=[P(udp, sender, pod, 5000), P(tcp, sender, pod, 80), P(ping, sender, pod)])
        time.sleep(0.3)
    finally:
        blaster.stop()
    assert blaster.sent > 0
    assert pod.server.seen() == 0, f"the sealed pod received {pod.server.seen()} connections or datagrams"
    pn.label(pod, "role", "open")
    wait_enforced(lambda: udp(sender, pod, 5000), True, "the pod once no longer sealed")


def test_new_pod_allowed_by_policy_answers_from_its_first_packet(pn):
    """A tier that allows the new pod's client and drops the rest at its end: probed right after
    ADD returns (no wait), the allowed traffic answers at once and the rest is dropped. UDP and
    ping send one packet; TCP's timeout is below the SYN's 1 s retransmission, so its first SYN
    must pass."""
    client = pn.pod({"app": "fa-client"})
    other = pn.pod({"app": "fa-other"})
    pn.apply(document("Tier", "fa-tier", {"order": 50}))
    pn.policy(
        "fa-open",
        {
            "selector": "role == 'fa-new'",
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "source": {"selector": "app == 'fa-client'"}}],
            "egress": [{"action": "Allow", "destination": {"selector": "app == 'fa-client'"}}],
        },
        tier="fa-tier",
    )
    pod = pn.pod({"role": "fa-new"})
    first = 0.9  # below TCP's first SYN retransmission
    expect(
        allowed=[
            P(udp, client, pod, 5000),
            P(udp, client, pod, 5000, v6=True),
            P(ping, client, pod),
            P(tcp, client, pod, 80, timeout=first),
            P(tcp, client, pod, 80, v6=True, timeout=first),
            P(udp, pod, client, 5001),
            P(tcp, pod, client, 443, v6=True, timeout=first),
        ],
        denied=[P(udp, other, pod, 5000), P(tcp, other, pod, 80, v6=True), P(udp, pod, other, 5000), P(tcp, pod, other, 80)],
    )


def test_established_flow_survives_policy_change(pn):
    client = pn.pod({"app": "ef-client"})
    server = pn.pod({"app": "ef-server"})
    flows = []
    for v6 in (False, True):
        family = socket.AF_INET6 if v6 else socket.AF_INET
        with netns.inside(client.ns):
            t = socket.create_connection((server.address(v6), 80), timeout=2)
            u = socket.socket(family, socket.SOCK_DGRAM)
        u.settimeout(2)
        u.connect((server.address(v6), 5000))
        flows.append((t, u))
    try:
        for t, u in flows:
            t.sendall(b"one")
            assert t.recv(16) == b"one"
            u.send(b"one")
            assert u.recv(16) == b"one"
        pn.policy("ef-deny", {"selector": "app == 'ef-server'", "types": ["Ingress"], "ingress": [DENY]})
        wait_enforced(lambda: tcp(client, server, 80), False, "a new connection under Deny")
        expect(denied=[P(tcp, client, server, 80, v6=True), P(udp, client, server, 5000)])
        for t, u in flows:
            t.sendall(b"two")
            assert t.recv(16) == b"two", "the established TCP connection stopped"
            u.send(b"two")
            assert u.recv(16) == b"two", "the established UDP flow stopped"
    finally:
        for t, u in flows:
            t.close()
            u.close()


def test_del_removes_chains_and_conntrack(pn):
    client = pn.pod({"app": "del-client"})
    gone = pn.pod({"app": "del-target"})
    for v6 in (False, True):
        with netns.inside(client.ns):
            t = socket.create_connection((gone.address(v6), 80), timeout=2)
        t.sendall(b"x")
        assert t.recv(4) == b"x"
        t.close()
        assert udp(client, gone, 5000, v6)
    ingress, egress = endpoint_chains(gone.interface)
    for family in ("ip", "ip6"):
        assert {ingress, egress} <= pn.pn.chains(family), f"{family}: the endpoint's chains before DEL"
    assert pn.pn.conntrack(gone.v4) and pn.pn.conntrack(gone.v6), "conntrack entries of the pod before DEL"
    pn.pn.remove_pod(gone)
    for family in ("ip", "ip6"):
        left = {ingress, egress} & pn.pn.chains(family)
        assert not left, f"{family}: {left} still there after DEL: {pn.pn.nft('list', 'table', family, 'calico').stdout[-3000:]}"
    assert pn.pn.conntrack(gone.v4) == [], "IPv4 conntrack entries after DEL"
    assert pn.pn.conntrack(gone.v6) == [], "IPv6 conntrack entries after DEL"
    assert gone.interface not in pn.pn.nft("list", "table", "ip", "calico").stdout, "the interface still named in the dispatch"


def test_del_answers_only_once_everything_is_gone(pn):
    """Issue 19: DEL's work is never moved out of the call (calico-node deletes the veth beside the
    datastore work): the moment it returns, before the runtime removes the namespace, the veth and
    the pod's routes are gone from the node, its chains from both tables, its conntrack entries,
    its endpoint and its addresses' allocations from etcd."""
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.store import connect
    from tests.calico_support import held_addresses

    client = pn.pod({"app": "del-now-client"})
    gone = pn.pod({"app": "del-now-target"})
    for v6 in (False, True):
        assert udp(client, gone, 5000, v6)
    assert pn.pn.conntrack(gone.v4) and pn.pn.conntrack(gone.v6), "conntrack entries of the pod before DEL"
    if gone.server is not None:
        gone.server.stop()
    run = pn.pn.node.plugin("DEL", gone.conf, gone.ns, **gone.cni_args)
    assert run.rc == 0, f"DEL: rc={run.rc} {run.stdout} {run.stderr[-2000:]}"
    # Right away: nothing below waits or retries.
    links = in_ns(pn.pn.node.ns, "ip", "-o", "link", "show").stdout
    routes = in_ns(pn.pn.node.ns, "ip", "route", "show").stdout + in_ns(pn.pn.node.ns, "ip", "-6", "route", "show").stdout
    chains = pn.pn.chains("ip") | pn.pn.chains("ip6")
    entries = pn.pn.conntrack(gone.v4) + pn.pn.conntrack(gone.v6)
    store = connect(EtcdSettings((pn.pn.endpoint,)))
    try:
        held = {a for addresses in held_addresses(store).values() for a in addresses}
        endpoint = store.workload_endpoint(gone.namespace, gone.name)
    finally:
        store.close()
    assert f" {gone.interface}@" not in links and f" {gone.interface}:" not in links, links
    assert f"{gone.v4} " not in routes and f"{gone.v6} " not in routes, routes
    assert not set(endpoint_chains(gone.interface)) & chains
    assert entries == []
    assert endpoint is None
    assert gone.v4 not in held and gone.v6 not in held
    netns.delete(gone.ns)
    pn.pn.node.pods.remove(gone.ns)
    pn.pn.pods.remove(gone)
    pn.pods.remove(gone)


def test_hostile_policies_in_etcd_skipped_and_reported(pn):
    """Records calicoctl refuses, written straight to etcd: a selector that does not parse, a port
    out of range, 6,000 rules. Each is reported in calico-node's log; the other policies keep
    working and new ones are still enforced."""
    a = pn.pod({"app": "h-client"})
    b = pn.pod({"app": "h-server"})
    target = pn.pod({"app": "hostile-target"})
    pn.policy(
        "h-deny-443",
        {"selector": "app == 'h-server'", "types": ["Ingress"], "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}, ALLOW]},
    )
    wait_enforced(lambda: tcp(a, b, 443), False, "the valid policy in place")
    key, value, _ = pn._stored("GlobalNetworkPolicy", "h-deny-443", None)
    template = json.loads(value)

    def hostile(name: str, spec: dict) -> tuple[str, bytes]:
        doc = json.loads(json.dumps(template))
        doc["metadata"]["name"] = f"default.{name}"
        annotations = doc["metadata"].get("annotations") or {}
        if "projectcalico.org/metadata" in annotations:
            meta = json.loads(annotations["projectcalico.org/metadata"])
            meta["name"] = name
            annotations["projectcalico.org/metadata"] = json.dumps(meta)
        for field in ("uid", "resourceVersion"):
            doc["metadata"].pop(field, None)
        doc["spec"] = {**doc["spec"], **spec}
        return POLICIES + f"default.{name}", json.dumps(doc).encode()

    records = [
        hostile("h-bad-selector", {"selector": "app == ((", "ingress": [ALLOW]}),
        hostile("h-bad-port", {"selector": "app == 'hostile-target'", "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [70000]}}]}),
        hostile(
            "h-many-rules",
            {
                "selector": "app == 'hostile-target'",
                "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [1 + n % 60000]}} for n in range(6000)],
            },
        ),
    ]

    def remove() -> None:
        c = etcd_client(pn.endpoint)
        try:
            for k, _ in records:
                c.delete(k)
        finally:
            c.close()

    # Registered before the puts: a put that fails half-way leaves nothing behind either.
    pn.cleanups.append(remove)
    client = etcd_client(pn.endpoint)
    try:
        for k, v in records:
            client.put(k, v)
    finally:
        client.close()
    pn.pn.wait_programmed()
    for k, _ in records:
        # policy_model.LeftOut's report: "<key>: <why>; left out of policy".
        wait_enforced(
            lambda: any(k in line and "left out of policy" in line for line in pn.pn.log_text().splitlines()),
            True,
            f"calico-node's log reporting {k} left out of policy",
            timeout=10,
            hold=0,
        )
    assert pn.node.health() is not None, "calico-node still answers"
    expect(
        # The hostile policies select hostile-target; skipped, they do not apply to it, so its
        # profile (the network's) lets a reach it. Were the 6,000-rule one enforced, UDP and TCP
        # 8080 (not in its ports 1-6000) would end at its tier's drop.
        allowed=[P(tcp, a, b, 80), P(tcp, a, b, 80, v6=True), P(udp, a, target, 53), P(udp, a, target, 53, v6=True), P(tcp, a, target, 8080)],
        denied=[P(tcp, a, b, 443), P(tcp, a, b, 443, v6=True)],  # the valid policy
    )
    # A policy applied after the hostile records is enforced.
    pn.policy(
        "h-deny-5000",
        {
            "selector": "app == 'h-server'",
            "order": 1,
            "types": ["Ingress"],
            "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [5000]}}],
        },
    )
    wait_enforced(lambda: tcp(a, b, 5000), False, "a policy applied after the hostile records")
    assert tcp(a, b, 5001)


def test_add_fails_11_with_calico_node_stopped_and_tables_stay(pn):
    """Last in the module: stops and restarts the module's calico-node. While it starts again, a
    denied flow is blasted and an allowed one probed until it programmed its tables from the
    datastore: the kernel's tables stay in force until the first full sync (no gap opening the
    denied flow, no moment dropping the allowed one)."""
    a = pn.pod({"app": "st-client"})
    b = pn.pod({"app": "st-server"})
    pn.policy(
        "st-deny-443",
        {
            "selector": "app == 'st-server'",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}},
                {"action": "Deny", "protocol": "UDP", "destination": {"ports": [5001]}},
                ALLOW,
            ],
        },
    )
    wait_enforced(lambda: tcp(a, b, 443), False, "the policy in place")
    assert not udp(a, b, 5001)
    node = pn.node
    assert pn.pn.marker.exists(), "calico-node enforcing: its marker"
    node.stop()
    ns = netns.add(f"{netns.PREFIX}st11-{a.ns[-8:]}")
    try:
        run = node.plugin("ADD", pn.pn.conf(), ns)
        assert run.rc != 0, f"ADD with calico-node stopped succeeded: {run.stdout}"
        assert run.out and run.out.get("code") == 11, f"not error 11: {run.stdout} {run.stderr[-500:]}"
        assert "calico-node" in json.dumps(run.out), f"the error does not name the daemon: {run.out}"
        # The kernel's tables keep enforcing with the daemon gone.
        expect(allowed=[P(tcp, a, b, 80), P(tcp, a, b, 80, v6=True)], denied=[P(tcp, a, b, 443), P(tcp, a, b, 443, v6=True)])
        # Restart under traffic, until calico-node programmed from the datastore's revision.
        denied_before = b.server.seen("tcp", 443) + b.server.seen("udp", 5001)
        blasters = [Blaster(a.ns, b.v4, udp_port=5001, tcp_port=443), Blaster(a.ns, b.v6, udp_port=5001, tcp_port=443)]
        prober = Prober(lambda: tcp(a, b, 80, timeout=ALLOWED_TIMEOUT) and udp(a, b, 5000, v6=True, timeout=ALLOWED_TIMEOUT))
        try:
            node.start()
            assert pn.pn.marker.exists(), "calico-node's marker"
            pn.pn.wait_programmed()
            time.sleep(0.3)  # and a little after
        finally:
            for blaster in blasters:
                blaster.stop()
            prober.stop()
        assert sum(bl.sent for bl in blasters) > 0, "the blasters sent nothing"
        assert prober.runs >= 2, f"the allowed flow was probed {prober.runs} times"
        assert not prober.failures, f"the allowed flow failed {len(prober.failures)} of {prober.runs} times while calico-node started"
        assert b.server.seen("tcp", 443) + b.server.seen("udp", 5001) == denied_before, "a denied packet got through while calico-node started"
    finally:
        netns.delete(ns)
        if node.proc is None:
            node.start()
    pn.pn.wait_programmed()
    # Back: pods are created again, under the same policy.
    c = pn.pod({"app": "st-client"})
    expect(allowed=[P(tcp, c, b, 80)], denied=[P(tcp, c, b, 443)])
