#!/usr/bin/env bash
# The README's first command (run as root on Debian/Ubuntu): install what is needed, then show the
# whole mission on one node. A private etcd, the plugins installed by scripts/install-cni.sh into a
# temporary CNI directory, a pool applied from a resource file with calicoctl, three pods started
# through cnitool, their addresses and the routes the node got, pings pod to pod and node to pod,
# the IPAM view, and the addresses freed when the pods are deleted.
#
# By default the node is a network namespace the demo creates (with an uplink namespace beside it),
# so the machine's own network is not touched. --host runs the node on the machine's own namespace
# instead. ETCD_ENDPOINTS=... uses an existing etcd instead of the private one (it must be reachable
# from the node). Everything the demo creates is removed at the end, also when interrupted.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
host_mode=0
for arg in "$@"; do
    case "$arg" in
        --host) host_mode=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown option $arg (--host, --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates network namespaces and interfaces)" >&2; exit 1; }

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '   %s\n' "$*"; }

bold "Installing what the demo needs (Debian packages, a Python environment, cnitool)"
"$here/scripts/setup-deps.sh" --demo 2>&1 | sed 's/^/   /'

tag="calico-demo-$$"
work=$(mktemp -d "/tmp/$tag.XXXXXX")
node_ns="$tag-node"
up_ns="$tag-uplink"
pods=("$tag-pod1" "$tag-pod2" "$tag-pod3")
etcd_pid=""
agent_pid=""
installed=0
# Where scripts/install-cni.sh puts everything (the agent's unit too: the demo starts the agent itself).
install_dirs=(--prefix "$work/venv" --bin-dir "$work/bin" --conf-dir "$work/net.d" --calicoctl-dir "$work/bin" --unit-dir "$work/systemd")

cleanup() {
    set +e
    trap - EXIT INT TERM
    for pod in "${pods[@]}"; do
        if [ -e "/var/run/netns/$pod" ]; then
            cni del "$pod" >/dev/null 2>&1
            ip netns del "$pod" 2>/dev/null
        fi
    done
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
    pkill -f -- "--data-dir $work/etcd" 2>/dev/null
    [ "$host_mode" = 0 ] && { ip netns del "$node_ns" 2>/dev/null; ip netns del "$up_ns" 2>/dev/null; }
    [ "$installed" = 1 ] && "$here/scripts/install-cni.sh" "${install_dirs[@]}" --uninstall >/dev/null 2>&1
    rm -rf "$work"
    # libcni's cached results of the demo's attachments only (cnitool derives the container ID
    # from the netns path); a DEL that ran removed them already.
    for pod in "${pods[@]}"; do
        cid="cnitool-$(printf '%s' "/var/run/netns/$pod" | sha512sum | cut -c1-20)"
        rm -f "/var/lib/cni/results/calico-$cid-eth0" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

if [ "$host_mode" = 1 ]; then
    node_prefix=()
    node_desc="this machine's own network namespace"
else
    node_prefix=(ip netns exec "$node_ns")
    node_desc="network namespace $node_ns"
fi
in_node() { "${node_prefix[@]}" "$@"; }
# cni VERB POD: cnitool VERB of the network "calico" for POD's namespace, in the node.
cni() { in_node env NETCONFPATH="$work/net.d" CNI_PATH="$work/bin" cnitool "$1" calico "/var/run/netns/$2"; }
# wait_for COMMAND...: until COMMAND succeeds (quietly), for up to 10 s; its last status.
wait_for() {
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    "$@" >/dev/null 2>&1
}
# json_get EXPR: EXPR of the JSON document `d` read from stdin.
json_get() { "$work/venv/bin/python" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

bold "A node: $node_desc"
if [ "$host_mode" = 0 ]; then
    # The node has an address on lo and an uplink to a second namespace carrying its default
    # route: the kernel answers proxy ARP for the pods' gateway 169.254.1.1 only when it has a
    # route for the destination through another interface.
    ip netns add "$node_ns"
    ip netns add "$up_ns"
    ip -n "$node_ns" link set lo up
    ip -n "$up_ns" link set lo up
    ip -n "$node_ns" addr add 198.19.255.1/32 dev lo
    ip -n "$node_ns" link add uplink type veth peer name downlink netns "$up_ns"
    ip -n "$up_ns" addr add 198.19.0.1/32 dev lo
    ip -n "$node_ns" link set uplink up
    ip -n "$up_ns" link set downlink up
    ip -n "$node_ns" route add default via 198.19.0.1 dev uplink onlink src 198.19.255.1
    ip -n "$up_ns" route add 198.19.255.1/32 dev downlink
    show "node address 198.19.255.1, default route via its uplink"
fi

if [ -n "${ETCD_ENDPOINTS:-}" ]; then
    endpoints=$ETCD_ENDPOINTS
    show "using etcd at $endpoints"
else
    port=2379
    [ "$host_mode" = 1 ] && port=23790
    endpoints="http://127.0.0.1:$port"
    # A simple command (not a function) in the background, so $! is etcd itself; in its own
    # session, so a Ctrl-C does not stop it before the cleanup's DELs have used it.
    setsid "${node_prefix[@]}" etcd --name demo --data-dir "$work/etcd" --listen-client-urls "$endpoints" \
        --advertise-client-urls "$endpoints" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-cluster "demo=http://127.0.0.1:$((port + 1))" \
        --log-level error --logger zap >"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    wait_for in_node env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health \
        || { echo "etcd did not start:"; tail "$work/etcd.log"; exit 1; }
    show "a private etcd listens on $endpoints (data in $work/etcd)"
fi

bold "Installing the plugins with scripts/install-cni.sh into $work"
agent_socket="$work/agent/cni.sock"
"$here/scripts/install-cni.sh" "${install_dirs[@]}" --nodename demo-node --etcd-endpoints "$endpoints" \
    --log-file "$work/cni.log" --agent-socket "$agent_socket" \
    >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
installed=1
show "$(tail -n 1 "$work/install.log")"
show "first line of $work/bin/calico: $(head -n 1 "$work/bin/calico")"

bold "The per-node agent (calico-cni-agent), started in the node as the installer says"
# In its own session, like etcd: a Ctrl-C leaves it to the cleanup, after the DELs.
setsid "${node_prefix[@]}" "$work/bin/calico-cni-agent" --socket "$agent_socket" --log-file "$work/agent.log" &
agent_pid=$!
wait_for "$work/bin/calico-cni-agent" health --socket "$agent_socket" || true
show "health: $("$work/bin/calico-cni-agent" health --socket "$agent_socket" 2>&1)"
show "the plugins hand each request to it over $agent_socket (without it they do the work themselves)"
calicoctl() { in_node "$work/bin/calicoctl" --etcd-endpoints "$endpoints" "$@"; }
# The plugins' release journal lives in the demo's directory, removed at the end like the rest.
export CALICO_RELEASE_JOURNAL_DIR="$work/journal"

bold "An IP pool from a resource file (calicoctl apply -f)"
cat >"$work/pool.yaml" <<'EOF_POOL'
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: demo-pool
spec:
  cidr: 198.18.0.0/24
  blockSize: 28
  nodeSelector: all()
EOF_POOL
sed 's/^/   | /' "$work/pool.yaml"
calicoctl apply -f "$work/pool.yaml" | sed 's/^/   /'
calicoctl get ippools -o wide | sed 's/^/   /'

bold "Three pods, each a network namespace, added through cnitool"
declare -A address
for pod in "${pods[@]}"; do
    ip netns add "$pod"
    result=$(cni add "$pod")
    address[$pod]=$(json_get 'd["ips"][0]["address"].split("/")[0]' <<<"$result")
    show "$pod: ${address[$pod]}  (eth0 in the pod; $(json_get 'd["interfaces"][0]["name"]' <<<"$result") on the node)"
done

bold "Routes the node got (one /32 per pod, through its host veth)"
in_node ip route show | grep cali | sed 's/^/   /'
bold "Inside ${pods[0]}: its address and routes (gateway 169.254.1.1, answered by proxy ARP)"
ip -n "${pods[0]}" -4 addr show dev eth0 | grep inet | sed 's/^/   /'
ip -n "${pods[0]}" route show | sed 's/^/   /'

bold "Traffic"
ping_one() { # ping_one FROM-NAMESPACE-OR-node ADDRESS
    local from=$1 to=$2
    if [ "$from" = node ]; then in_node ping -c 1 -W 2 "$to"; else ip netns exec "$from" ping -c 1 -W 2 "$to"; fi >/dev/null
}
failed=0
check_ping() { # check_ping LABEL FROM TO
    if ping_one "$2" "$3"; then show "$1 ($3): reply"; else show "$1 ($3): NO REPLY"; failed=1; fi
}
check_ping "pod1 -> pod2" "${pods[0]}" "${address[${pods[1]}]}"
check_ping "pod2 -> pod3" "${pods[1]}" "${address[${pods[2]}]}"
check_ping "node -> pod3" node "${address[${pods[2]}]}"

bold "IPAM as the operator sees it (calicoctl ipam show --show-blocks)"
calicoctl ipam show --show-blocks | sed 's/^/   /'

bold "Deleting the pods through cnitool"
for pod in "${pods[@]}"; do
    cni del "$pod"
    ip netns del "$pod"
    show "$pod deleted"
done
show "the agent served $("$work/bin/calico-cni-agent" health --socket "$agent_socket" | json_get 'd["served"]') requests"
bold "The addresses are free again"
calicoctl ipam show | sed 's/^/   /'
show "routes left on the node for pods: $(in_node ip route show | grep -c cali || true)"

if [ "$failed" = 1 ]; then
    bold "Some pings got no reply: the demo failed (the log is $work/cni.log, removed at exit)"
    cat "$work/cni.log" 2>/dev/null | tail -n 20
    exit 1
fi
bold "Done: removing the pods, the node, etcd and the installation"
