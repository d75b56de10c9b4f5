"""The per-node CNI agent (`calico-cni-agent`) and the thin client the plugins use to reach it.

- `wire`: the framing on the Unix socket (imported by the exec'd plugin: standard library only).
- `client`: the thin path of the plugin entry points (forward, or say "run in-process").
- `warm`: warm etcd connections shared across requests, one per etcd settings tuple.
- `server`: the socket server; one thread per request, each run with the plugins' own handlers.
- `main`: the `calico-cni-agent` command (serve, health).

One agent serves the network namespace it was started in (the node's); it refuses callers in any
other network namespace, so a node with several namespaces that run plugins needs one agent each.
"""
