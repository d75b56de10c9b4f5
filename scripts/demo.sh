#!/usr/bin/env bash
# The README's first command: install what is needed, then show calico-ipam handing out addresses
# from a pool in a private etcd, and taking them back. Everything runs inside a network namespace
# the demo creates (the "node"); the machine's own network is not touched. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup-deps.sh"
venv="$here/.venv/bin"

node="calico-demo-$$"
data=$(mktemp -d /tmp/calico-demo-etcd.XXXXXX)
etcd_pid=""
cleanup() {
    [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null || true
    ip netns del "$node" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_node() { ip netns exec "$node" "$@"; }

step "A node (network namespace $node) with a private etcd on its loopback"
ip netns add "$node"
ip -n "$node" link set lo up
in_node etcd --name demo --data-dir "$data" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --log-level error --logger zap >"$data/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 50); do in_node etcdctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
in_node etcdctl endpoint health

step "An IP pool 198.18.0.0/24 (blocks of /28), written the way Calico stores it"
in_node etcdctl put /calico/resources/v3/projectcalico.org/ippools/demo-pool \
  '{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"demo-pool"},"spec":{"cidr":"198.18.0.0/24","blockSize":28,"nodeSelector":"all()"}}' >/dev/null
in_node etcdctl get --print-value-only /calico/resources/v3/projectcalico.org/ippools/demo-pool

conf='{"cniVersion":"1.0.0","name":"demo-net","type":"calico","etcd_endpoints":"http://127.0.0.1:2379",
       "nodename":"demo-node","log_file_path":"'"$data"'/cni.log","ipam":{"type":"calico-ipam"}}'
ipam() { # ipam VERB CONTAINER
    echo "$conf" | in_node env CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/var/run/netns/none \
        CNI_IFNAME=eth0 CNI_PATH="$venv" "$venv/calico-ipam"
}

step "calico-ipam ADD for three containers, exactly as a runtime execs it"
for c in pod-a pod-b pod-c; do printf '%s: ' "$c"; ipam ADD "$c"; done

step "The node claimed a block; its affinity and the block in etcd"
in_node etcdctl get --keys-only --prefix /calico/ipam/v2/host/
in_node etcdctl get --print-value-only --prefix /calico/ipam/v2/assignment/ | head -c 600; echo

step "calico-ipam DEL for the three containers"
for c in pod-a pod-b pod-c; do ipam DEL "$c" && echo "$c released"; done
echo "handles left: $(in_node etcdctl get --keys-only --prefix /calico/ipam/v2/handle/ | grep -c . || true)"

step "Done; removing the namespace, etcd and its data"
