"""Network policy as nftables sections of the daemon's tables (pure): what Felix programs per
endpoint (v3.30 rules/endpoints.go, policy.go, dispatch.go, static.go), laid out for nftables.

Marks (Felix's defaults in FelixConfiguration's mark mask 0xffff0000): ACCEPT_MARK 0x10000 (a
policy or profile allowed: the endpoint chain returns), PASS_MARK 0x20000 (a policy passed: the
rest of its tier is skipped), SCRATCH_MARK 0x80000 (a rule needing an OR of matches).

Base chains (one family's table):
- `policy-forward` (forward hook, filter priority): traffic neither from nor to `cali*` returns at
  once; established and related accepted, invalid dropped; from `cali*`: jump `from-wl-dispatch`
  (the sender's egress); to `cali*`: jump `to-wl-dispatch` (the receiver's ingress).
- `policy-input` (input hook): from `cali*`: jump `wl-to-host`: established/related accepted,
  invalid dropped, (IPv6) ICMPv6 130-133, 135, 136 accepted, jump `from-wl-dispatch` (the pod's
  egress policy), then the endpoint-to-host action (Drop: drop; Accept and Return: accept).
- `policy-antispoof` (prerouting hook, raw priority): from `cali*`, a source whose reverse path is
  not the interface it came in on is dropped (`fib saddr . iif oif missing`), as Felix's rpfilter.
Host to a local pod (output hook) is not policed.

Dispatch: verdict maps `from-wl` (iifname: goto `fw-<iface>`) and `to-wl` (oifname: goto
`tw-<iface>`) read by the chains `from-wl-dispatch` / `to-wl-dispatch`, whose last rule drops
(an unknown `cali*` interface: fail closed).

Endpoint chains `tw-<iface>` (ingress) and `fw-<iface>` (egress): clear ACCEPT and PASS; (fw
only) drop UDP to the VXLAN port and IPIP; per applicable tier: clear PASS, per policy "PASS clear:
jump the policy chain", "ACCEPT set: return", then the end-of-tier drop when PASS is clear (not when
the tier's defaultAction is Pass); per profile: jump its chain, "ACCEPT set: return" (a profile
that does not exist: drop there); finally drop.

Policy chains `pi-<id>` / `po-<id>` and profile chains `pri-<name>` / `pro-<name>`, shared by
every endpoint they apply to: one rule per Calico rule; Allow sets ACCEPT and returns, Pass sets
PASS and returns, Deny drops, Log logs with the prefix `calico-packet` (and goes on); every rule
has a counter. Selector matches use sets holding the addresses of every matching endpoint on every
node and the nets of matching network sets; named ports use sets of address . protocol . port.

To be written (issue 18).
"""

from __future__ import annotations
