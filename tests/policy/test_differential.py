"""The differential test of network policy (issue 18): hypothesis draws labels for a fixed set of
pods, a tier and 1-4 policies (tests/policy_generators.py); calicoctl applies them; once calico-node
says its tables are programmed from a revision at least that of the writes, every ordered pair of
pods is probed with real traffic over IPv4 and IPv6 (TCP connect and UDP echo on each listening
port, ICMP / ICMPv6 echo) and each answer must be what the plain-Python evaluator
(tests/policy_oracle.py) says, probe by probe.

One node (tests/policy_harness.py's `PolicyNode`, the `policy` fixture), five pods made once
through the real plugin, each running the harness's echo server. Labels and named ports change per
example by applying the pods' endpoint documents with new ones, in the same `calicoctl apply` as
the tier, a GlobalNetworkSet and the policies. About 50 examples a run: CALICO_DIFF_EXAMPLES and CALICO_DIFF_SEED change the
count and the seed (printed, so a failure reproduces); CALICO_DIFF_SHRINK=1 lets hypothesis shrink
a failure (slow: every shrink step is real traffic).

A probe the oracle allows waits RECHECK_TIMEOUT for its answer (one it denies waits PROBE_TIMEOUT),
and one the oracle allows but the kernel denied is tried once more before it counts, so a slow
machine cannot fake a deny; a kernel ALLOW the oracle denies is never tried again (the node's
conntrack table is flushed before each example's probes, so none rides an earlier probe's entry).
The failure names the probe, the oracle's decisions, the kernel's answer and the chains of
`nft list table ip[6] calico` that the probe crosses.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.cluster_support import in_ns
from tests.policy_generators import EXTRA_TIER, NETWORK_SET, ICMP_ECHO_REQUEST, TCP_PORTS, UDP_PORTS, Example, Pod, examples
from tests.policy_harness import PolicyNode, ping, tcp, udp
from tests.policy_oracle import Probe, World

PODS = 5
EXAMPLES = int(os.environ.get("CALICO_DIFF_EXAMPLES", "50"))
SEED = int(os.environ.get("CALICO_DIFF_SEED", "18"))
PHASES = (Phase.explicit, Phase.generate, Phase.shrink) if os.environ.get("CALICO_DIFF_SHRINK") == "1" else (Phase.explicit, Phase.generate)
PROBE_TIMEOUT = 1.0  # a probe the oracle denies waits this long (all at once: one timeout per example)
RECHECK_TIMEOUT = 3.0  # a probe the oracle allows (answered in milliseconds unless the machine is loaded or the kernel drops it)
ENFORCED_TIMEOUT = 20.0


def documents(text: str) -> list[dict]:
    """`calicoctl get -o json` output: one document or a typed list."""
    doc = json.loads(text)
    return doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]


def chains(listing: str, names: set[str]) -> str:
    """The chains, sets and maps of an `nft list table` listing named in `names` or mentioning one
    of them, and the selector sets, for a failure report."""
    out = []
    for match in re.finditer(r"^\t(?:chain|set|map) (\S+) \{.*?^\t\}", listing, flags=re.S | re.M):
        name, body = match.group(1), match.group(0)
        if name in names or any(n in body for n in names) or name.startswith("sel-"):
            out.append(body)
    return "\n".join(out) or listing


class Diff:
    """The module's node and pods, and what the examples applied (a plain class: hypothesis prints
    a dataclass argument field by field)."""

    def __init__(self, policy: PolicyNode, pods: list[Pod], weps: dict[str, dict], interfaces: dict[str, str], base: list[dict]) -> None:
        self.policy, self.pods = policy, pods
        self.weps = weps  # pod key -> its endpoint document as stored (labels replaced per example)
        self.interfaces = interfaces  # pod key -> host interface
        self.base = base  # tiers and profiles as stored
        self.applied: list[dict] = []  # the previous example's policies
        self.count = self.probes_run = self.allowed_seen = 0
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"Diff(pods={[p.key for p in self.pods]}, example={self.count})"


def _clean(doc: dict) -> dict:
    """A stored document made fit to apply again (no server-set metadata)."""
    doc = copy.deepcopy(doc)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        doc.get("metadata", {}).pop(key, None)
    return doc


@pytest.fixture(scope="module")
def diff(policy: PolicyNode):
    """PODS pods (no labels of their own yet) and the extra tier on the module's node."""
    made = []
    state = None
    try:
        for _ in range(PODS):
            made.append(policy.add_pod(v6=True))
        policy.ctl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": EXTRA_TIER}, "spec": {"order": 100, "defaultAction": "Deny"}}
            ),
        )
        pods, weps, interfaces = [], {}, {}
        for pod in made:
            key = f"{pod.namespace}/{pod.name}"
            pods.append(Pod(key, pod.v4, pod.ns, pod.v6))
            weps[key] = _clean(policy.wep(pod))
            interfaces[key] = pod.interface
        base = documents(policy.ctl("get", "tiers", "-o", "json").stdout) + documents(policy.ctl("get", "profiles", "-o", "json").stdout)
        base = [_clean(d) for d in base if d["metadata"]["name"] != EXTRA_TIER]
        print(
            f"\ndifferential: seed {SEED}, {EXAMPLES} examples, pods {[(p.key, p.address, p.address6) for p in pods]}, "
            f"profiles {[d['metadata']['name'] for d in base if d['kind'] == 'Profile']}"
        )
        state = Diff(policy, pods, weps, interfaces, base)
        yield state
    finally:
        if state is not None:
            print(
                f"\ndifferential: {state.count} examples, {state.probes_run} probes ({state.allowed_seen} allowed) in {time.monotonic() - state.started:.0f}s"
            )
            if state.applied:
                policy.ctl("delete", "-f", "-", stdin=json.dumps(state.applied), check=False)
        policy.ctl("delete", "tier", EXTRA_TIER, check=False)
        policy.ctl("delete", "globalnetworkset", NETWORK_SET, check=False)
        for pod in made:
            policy.remove_pod(pod)


Planned = tuple[Pod, Pod, int, str, "int | None"]  # source, destination, IP version, protocol, port


def probe_plan(pods: list[Pod]) -> list[Planned]:
    """Every ordered pair of distinct pods, in both families, by TCP and UDP on each probed port and
    by ICMP echo."""
    plan: list[Planned] = []
    for src in pods:
        for dst in pods:
            if src is not dst:
                for version in (4, 6):
                    plan += [(src, dst, version, "tcp", port) for port in TCP_PORTS]
                    plan += [(src, dst, version, "udp", port) for port in UDP_PORTS]
                    plan.append((src, dst, version, "icmp", None))
    return plan


def oracle_probe(src: Pod, dst: Pod, version: int, proto: str, port: int | None) -> Probe:
    """The oracle's probe for one planned one (ICMP: an echo request of the family)."""
    if proto == "icmp":
        return Probe(src.key, dst.key, "ICMP" if version == 4 else "ICMPv6", icmp_type=ICMP_ECHO_REQUEST[version], icmp_code=0, ip_version=version)
    return Probe(src.key, dst.key, proto.upper(), dst_port=port, ip_version=version)


def kernel_answer(planned: Planned, timeout: float) -> bool:
    """The kernel's answer to one probe (the harness's probes: a reply came back within `timeout`)."""
    src, dst, version, proto, port = planned
    if proto == "tcp":
        return tcp(src.netns, dst.ip(version), port, timeout=timeout)
    if proto == "udp":
        return udp(src.netns, dst.ip(version), port, timeout=timeout)
    return ping(src.netns, dst.ip(version), timeout=timeout)


def run_probes(plan: list[Planned], timeouts: list[float]) -> list[bool]:
    """Every probe at once, each with its own timeout (denied ones all wait out theirs together)."""
    with ThreadPoolExecutor(max(1, len(plan))) as pool:
        return list(pool.map(kernel_answer, plan, timeouts))


def apply_example(diff: Diff, example: Example) -> list[dict]:
    """Apply the example (the previous policies deleted, then the tier, the network set, the
    endpoints with their new labels and named ports, and the policies under this example's names, in one calicoctl apply) and wait until
    calico-node has programmed etcd's revision after the apply (tests/policy_harness.py `wait_programmed`). Returns the world's documents for the oracle."""
    diff.count += 1
    prefix = f"x{diff.count}"
    policies = []
    for doc in example.policies:
        doc = copy.deepcopy(doc)
        doc["metadata"]["name"] = re.sub(r"(^|\.)(p\d+)$", rf"\1{prefix}-\2", doc["metadata"]["name"])
        policies.append(doc)
    weps = []
    for key, wep in diff.weps.items():
        wep = copy.deepcopy(wep)
        wep["metadata"]["labels"] = dict(example.labels[key])
        wep["spec"]["ports"] = copy.deepcopy(example.ports[key])
        weps.append(wep)
    if diff.applied:
        diff.policy.ctl("delete", "-f", "-", stdin=json.dumps(diff.applied))
        diff.applied = []
    diff.policy.ctl("apply", "-f", "-", stdin=json.dumps([example.tier, example.network_set, *weps, *policies]))
    diff.applied = policies
    diff.policy.wait_programmed(ENFORCED_TIMEOUT)
    # Policy judges new flows only (as in Felix, a change never cuts an established one), and so
    # does the oracle: every probe must be a new flow. A UDP probe whose random source port (or a
    # ping whose id) an earlier example's probe used within conntrack's timeout would ride that
    # entry, a kernel ALLOW whatever the policy now says.
    for family in ("ipv4", "ipv6"):
        in_ns(diff.policy.node.ns, "conntrack", "-F", "-f", family)
    # The oracle reads the endpoints as calicoctl stored them.
    stored = documents(diff.policy.ctl("get", "workloadendpoints", "-A", "-o", "json").stdout)
    return [*diff.base, example.tier, example.network_set, *stored, *policies]


def report(diff: Diff, world: list[dict], wrong: list[tuple], policies: list[dict]) -> str:
    """The failure: each wrong probe with the oracle's decisions and the kernel's answer, the world,
    and the part of `nft list table ip[6] calico` those probes cross."""
    families = {version for (_, _, version, _, _), _, _ in wrong}
    listing = "\n".join(in_ns(diff.policy.node.ns, "nft", "list", "table", "ip" if v == 4 else "ip6", "calico").stdout for v in sorted(families))
    names, lines = set(), []
    for (src, dst, version, proto, port), verdict, answer in wrong:
        names |= {f"fw-{diff.interfaces[src.key]}", f"tw-{diff.interfaces[dst.key]}"}
        decisions = [(d.endpoint, d.direction, d.allowed, d.by) for d in verdict.decisions]
        lines.append(
            f"- {src.key} ({src.ip(version)}) -> {dst.key} ({dst.ip(version)}) {proto} {port or ''}: oracle "
            f"{'ALLOW' if verdict.allowed else 'DENY'} {decisions}, kernel {'ALLOW' if answer else 'DENY'}"
        )
    short = {p["metadata"]["name"].split(".")[-1] for p in policies}
    names |= {m for m in re.findall(r"\b(p[io]-[^\s;{}]+)", listing) if any(s in m for s in short)}
    shown = [d for d in world if d["kind"] != "Tier" or d["metadata"]["name"] == EXTRA_TIER]
    return (
        f"the kernel disagrees with the oracle (seed {SEED}, example {diff.count}):\n"
        + "\n".join(lines)
        + f"\n\nworld:\n{json.dumps(shown, indent=1)}\n\nnft (relevant part):\n{chains(listing, names)}"
    )


@pytest.mark.timeout(600)  # ~2 min for 50 examples; the suite's 300 s default is too close on a loaded machine
@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=PHASES, suppress_health_check=list(HealthCheck), print_blob=True)
@seed(SEED)
@given(data=st.data())
def test_the_kernel_agrees_with_the_oracle_probe_by_probe(diff, data):
    example = data.draw(examples(diff.pods))
    docs = apply_example(diff, example)
    world = World(docs)
    plan = probe_plan(diff.pods)
    verdicts = [world.evaluate(oracle_probe(*p)) for p in plan]
    answers = run_probes(plan, [RECHECK_TIMEOUT if v.allowed else PROBE_TIMEOUT for v in verdicts])
    diff.probes_run += len(plan)
    # Once more, only an expected ALLOW the kernel denied: a loaded machine (or a lost datagram) must
    # not turn a late answer into a deny. A kernel ALLOW the oracle denies counts at once.
    late = [i for i, (v, a) in enumerate(zip(verdicts, answers)) if v.allowed and not a]
    if late:
        for i, a in zip(late, run_probes([plan[i] for i in late], [RECHECK_TIMEOUT] * len(late))):
            answers[i] = a
    diff.allowed_seen += sum(answers)
    wrong = [(plan[i], verdicts[i], answers[i]) for i, (v, a) in enumerate(zip(verdicts, answers)) if v.allowed != a]
    assert not wrong, report(diff, docs, wrong, docs[-len(example.policies) :])
