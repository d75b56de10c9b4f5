"""The dataplane: the only code that speaks netlink or writes sysctls.

- `rtnl`: a small rtnetlink client (links, addresses, routes) over a socket of one namespace.
- `netns`: network namespace handles; work inside a container runs on a short-lived thread that
  entered it, never on the thread that owns the etcd channel (design rule 7).
- `sysctl`: /proc/sys/net reads and writes (in the calling thread's namespace).
- `mtu`: which MTU a new veth gets (design rule 9).
- `veth`: creating, finding and deleting the veth pair of a workload (rules 3 and 6).
- `routing`: container addresses and routes, host routes, the host veth's IPv6 link-local (rule 11).
- `wiring`: the whole procedure for one workload: set up with rollback, tear down, verify.

Only the standard library is imported (pyroute2's package import alone costs 150 to 200 ms).
"""
