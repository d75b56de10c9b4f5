"""`calicoctl node policy ENDPOINT [-n NAMESPACE]`: what is enforced for one workload endpoint, read
from etcd as calico-node reads it (the records its syncer watches for policy, through the same
`PolicyView` and `applicable` the compiler uses), so the answer is the daemon's own.

It prints the endpoint (node, interface, addresses, labels with those its profiles give), then per
direction each applicable tier in Felix's order with its policies in order and what the end of the
tier does, the profiles (a missing one denies), the final drop, and what applies but is not enforced
here. It names the nftables chains on the endpoint's node (`nft list chain ip calico tw-<iface>`),
and the records calico-node leaves out of policy (a hostile record written straight to etcd).
Calico has no such command; this one is ours.
"""

from __future__ import annotations

from typing import Any

import click

from calico_cni.datastore.etcd import Range
from calico_cni.model.keys import RESOURCES, workload_endpoint
from calico_cni.model.kinds.policy import go_float
from calico_cni.node.nft_policy import endpoint_chains, policy_chain, profile_chain
from calico_cni.node.nft_tables import TABLE
from calico_cni.node.policy_model import EGRESS, INGRESS, PREFIXES, LeftOut, Policy, WorkloadEndpoint, read_record
from calico_cni.node.policy_view import EndpointPolicies, PolicyView, TierPolicies, applicable

from calico_cni.ctl.context import connection_options, ctl, output_option
from calico_cni.ctl.errors import CtlError
from calico_cni.ctl.output import dump

WORKLOAD_ENDPOINTS = RESOURCES + "workloadendpoints/"
DIRECTIONS = ((INGRESS, "ingress", "to the endpoint"), (EGRESS, "egress", "from the endpoint"))


def read_view(store) -> tuple[PolicyView, dict[str, Any]]:
    """The PolicyView of every record calico-node watches for policy, read at one revision, and the
    raw key-values (to explain an endpoint the view leaves out)."""
    found, _ = store.client.read([Range(p, prefix=True) for p in PREFIXES])
    items = {kv.key: kv for kvs in found for kv in kvs}
    return PolicyView.read(items), items


def find_endpoint(view: PolicyView, items: dict[str, Any], name: str, namespace: str | None) -> WorkloadEndpoint:
    """The endpoint named `name` in `namespace` (default: default); else the one whose host interface
    is `name` (in `namespace` when given). CtlError saying why when there is none, or several."""
    key = workload_endpoint(namespace or "default", name)
    endpoint = view.endpoints.get(key)
    if endpoint is not None:
        return endpoint
    if key in items:
        try:
            read_record(key, items[key])
        except LeftOut as exc:
            raise CtlError(f"workload endpoint {namespace or 'default'}/{name} is not policed: {exc}") from None
        raise CtlError(f"workload endpoint {namespace or 'default'}/{name} has no ipNetworks: Calico's syncer leaves it out, so no policy applies to it")
    by_interface = [e for e in view.endpoints.values() if e.interface_name == name and (namespace is None or e.namespace == namespace)]
    if len(by_interface) == 1:
        return by_interface[0]
    if len(by_interface) > 1:
        names = ", ".join(sorted(f"{e.namespace}/{e.name}" for e in by_interface))
        raise CtlError(f"interface {name} is the host interface of several workload endpoints ({names}): give the endpoint's name and -n NAMESPACE")
    raise CtlError(
        f"workload endpoint {namespace or 'default'}/{name} not found (nor an endpoint whose host interface is {name}); list them with 'calicoctl get workloadendpoints -A'"
    )


def _policy_doc(policy: Policy, direction: str) -> dict[str, Any]:
    return {
        "kind": policy.kind,
        "namespace": policy.namespace,
        "name": policy.name,
        "order": policy.order,
        "chain": policy_chain(policy, direction),
    }


def _tier_doc(view: PolicyView, tier: TierPolicies, direction: str) -> dict[str, Any]:
    record = view.tiers.get(tier.tier)
    return {
        "tier": tier.tier,
        "order": record.order if record is not None else None,
        "exists": tier.valid,
        "policies": [_policy_doc(p, direction) for p in tier.policies],
        # What the end of the tier does to a packet no policy of the tier decided.
        "endOfTier": "pass" if tier.default_action == "Pass" else "drop",
    }


def _label_sources(view: PolicyView, endpoint: WorkloadEndpoint, labels: dict[str, str]) -> dict[str, str]:
    """key -> where the label comes from: "own", or "profile <name>" (the first of its profiles
    giving it, as `policy_view.endpoint_labels` merges them). A label from neither is a bug in
    this module or that one: it raises rather than being shown as the endpoint's own."""
    sources = {}
    for key in labels:
        if key in endpoint.labels:
            sources[key] = "own"
            continue
        for name in endpoint.profiles:
            profile = view.profiles.get(name)
            if profile is not None and key in profile.labels_to_apply:
                sources[key] = f"profile {name}"
                break
        else:
            raise RuntimeError(f"label {key!r} of {endpoint.namespace}/{endpoint.name} is neither its own nor given by one of its profiles")
    return sources


def policy_report(view: PolicyView, endpoint: WorkloadEndpoint) -> dict[str, Any]:
    """What applies to `endpoint`, as a document (the -o json/yaml output, and what the text shows)."""
    applied: EndpointPolicies = applicable(view, endpoint)
    ingress_chain, egress_chain = endpoint_chains(endpoint.interface_name)
    labels = dict(applied.labels)
    doc: dict[str, Any] = {
        "endpoint": {
            "namespace": endpoint.namespace,
            "name": endpoint.name,
            "node": endpoint.node,
            "interface": endpoint.interface_name,
            "addresses": [str(n) for n in endpoint.ip_networks],
            "profiles": list(endpoint.profiles),
            "labels": labels,
            "labelSources": _label_sources(view, endpoint, labels),
        },
        "table": TABLE,
        "chains": {"ingress": ingress_chain, "egress": egress_chain},
    }
    for direction, field, _ in DIRECTIONS:
        doc[field] = {
            "tiers": [_tier_doc(view, t, direction) for t in applied.tiers(direction)],
            "profiles": [
                {"name": name, "exists": profile is not None, "chain": profile_chain(name, direction) if profile is not None else None}
                for name, profile in applied.profiles
            ],
            "final": "drop",
        }
    doc["notEnforced"] = list(applied.unenforced)
    doc["leftOut"] = list(view.problems)
    return doc


def _order_text(order: float | None) -> str:
    return "none (last)" if order is None else go_float(order)


def render_text(doc: dict[str, Any]) -> str:
    """The report as text for people."""
    ep = doc["endpoint"]
    families = sorted({"ip6" if ":" in a else "ip" for a in ep["addresses"]})
    out = [
        f"Workload endpoint {ep['namespace']}/{ep['name']}",
        f"  node:       {ep['node']}",
        f"  interface:  {ep['interface']}",
        f"  addresses:  {', '.join(ep['addresses'])}",
        f"  profiles:   {', '.join(ep['profiles']) or '(none)'}",
        "  labels:",
    ]
    for key, value in sorted(ep["labels"].items()):
        source = ep["labelSources"][key]
        out.append(f"    {key}={value}" + ("" if source == "own" else f"  (from {source})"))
    if not ep["labels"]:
        out.append("    (none)")
    out.append(f"  chains on node {ep['node']}: ingress {doc['chains']['ingress']}, egress {doc['chains']['egress']}")
    out += [f"    nft list chain {family} {doc['table']} {doc['chains'][d]}" for family in families for d in ("ingress", "egress")]
    for _, field, what in DIRECTIONS:
        section = doc[field]
        out += ["", f"{field.capitalize()} ({what}; chain {doc['chains'][field]}):"]
        if not section["tiers"]:
            out.append("  no policy applies")
        for tier in section["tiers"]:
            exists = "" if tier["exists"] else ", no Tier resource: ordered after every tier"
            out.append(f"  tier {tier['tier']} (order {_order_text(tier['order'])}{exists}):")
            for i, p in enumerate(tier["policies"], 1):
                name = f"{p['namespace']}/{p['name']}" if p["namespace"] else p["name"]
                out.append(f"    {i}. {p['kind']} {name}, order {_order_text(p['order'])}  (chain {p['chain']})")
            end = "pass to the next tier (defaultAction Pass)" if tier["endOfTier"] == "pass" else "drop"
            out.append(f"    end of tier {tier['tier']}: {end}")
        intro = "then, when no tier decided, the profiles:" if section["tiers"] else "profiles:"
        out.append(f"  {intro}" if section["profiles"] else "  no profile")
        for i, p in enumerate(section["profiles"], 1):
            out.append(f"    {i}. {p['name']}  (chain {p['chain']})" if p["exists"] else f"    {i}. {p['name']}: does not exist: denies")
        out.append("  finally: drop")
    if doc["notEnforced"]:
        out += ["", *[f"not enforced here: {field}" for field in doc["notEnforced"]]]
    if doc["leftOut"]:
        out += ["", "Records left out of policy on every node (calicoctl would refuse them; they apply nowhere):"]
        out += [f"  {problem}" for problem in doc["leftOut"]]
    return "\n".join(out)


@click.command("policy")
@click.argument("endpoint")
@click.option("-n", "--namespace", metavar="NS", help="The endpoint's namespace (default: default).")
@output_option
@connection_options
def policy(endpoint: str, namespace: str | None, output: str) -> None:
    """Show what is enforced for one workload endpoint: per direction the tiers and policies that
    apply in evaluation order, what each tier's end does, the profiles, and the nftables chains on
    its node.

    ENDPOINT is the WorkloadEndpoint's name (see 'calicoctl get workloadendpoints -A') or its host
    interface (cali...). Read from etcd as calico-node reads it; works from any machine.
    """
    view, items = read_view(ctl().store)
    found = find_endpoint(view, items, endpoint, namespace)
    doc = policy_report(view, found)
    output = output.lower()
    click.echo(render_text(doc) if output == "table" else dump(doc, output))
