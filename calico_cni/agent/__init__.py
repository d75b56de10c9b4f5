"""The per-node CNI agent (`calico-cni-agent`) and the thin client the plugins use to reach it.

- `wire`: the framing on the Unix socket (imported by the exec'd plugin: standard library only).
- `client`: the thin path of the plugin entry points (forward, or say "run in-process").
- `warm`: warm etcd connections shared across requests, one per etcd settings tuple.
- `server`: the socket server; one thread per request, each run with the plugins' own handlers.
- `main`: the `calico-cni-agent` command (serve, health).

The agent does the node's side of each request in the caller's network namespace (from its pid),
so one agent serves every namespace of the machine; its etcd channels stay in its own namespace.
"""
