"""The dataplane: the only code that speaks netlink or writes sysctls.

- `rtnl`: a small rtnetlink client (links, addresses, routes) over a socket of one namespace.
- `netns`: network namespace handles; work inside a container runs on a short-lived thread that
  entered it, never on the thread that owns the etcd channel (gRPC's sockets and threads stay in
  the node's namespace).
- `sysctl`: /proc/sys/net reads and writes (in the calling thread's namespace).
- `mtu`: which MTU a new veth gets, decided before anything is created (docs/calico-plugin.md, "MTU").
- `veth`: creating, finding and deleting the veth pair of a workload; a link is only ever deleted
  when its alias names the attachment, and no name can collide with the node's own interfaces.
- `routing`: container addresses and routes, host routes, and the host veth's IPv6 link-local
  address read back from the kernel (the container's IPv6 default route goes via it).
- `wiring`: the whole procedure for one workload: set up with rollback, tear down, verify.

Only the standard library is imported (pyroute2's package import alone costs 150 to 200 ms).
"""
