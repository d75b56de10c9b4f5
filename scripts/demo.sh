#!/usr/bin/env bash
# The README's first command (run as root on Debian/Ubuntu): install what is needed, then show the
# whole mission on a small cluster. Three nodes share one fabric: a network namespace holding a
# private etcd and a bridge, each node a namespace with an uplink on that bridge. On each node the
# plugins and calico-node are installed by scripts/install-cni.sh (into a temporary directory),
# calico-node registers the node and runs BIRD, which speaks BGP with the other nodes. A pool is
# applied with calicoctl, one pod per node is started through cnitool, and the demo shows
# `calicoctl node status`, the routes BIRD installed (`ip route show proto bird`), pods pinging
# pods on other nodes although the fabric knows no pod address, network policy (a node refused by
# the network's profile until a GlobalNetworkPolicy lets the nodes in, a NetworkPolicy denying one
# pod another, `calicoctl node policy`), NAT outgoing to the fabric, the same pool switched to
# VXLAN (tunnel addresses, vxlan.calico and its routes), and the addresses freed when the pods
# are deleted.
#
# The machine's own network namespace is not touched. Everything the demo creates (namespaces,
# etcd, calico-node and BIRD processes, files) is removed at the end, also when interrupted.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown option $arg (--help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates network namespaces and interfaces)" >&2; exit 1; }

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '   %s\n' "$*"; }

bold "Installing what the demo needs (Debian packages with BIRD 2, a Python environment, cnitool)"
"$here/scripts/setup-deps.sh" --demo 2>&1 | sed 's/^/   /'

tag="calico-demo-$$"
work=$(mktemp -d "/tmp/$tag.XXXXXX")
fabric="$tag-fabric"
subnet=198.19.1          # the nodes' subnet on the fabric's bridge; the fabric is .1
etcd_url="http://$subnet.1:2379"
nodes=(1 2 3)
declare -A node_pid      # node -> its calico-node's pid
node_ns() { echo "$tag-node$1"; }
node_ip() { echo "$subnet.$((10 + $1))"; }
node_dir() { echo "$work/node$1"; }
pod_name() { echo "$tag-pod$1"; }    # pod N runs on node N
etcd_pid=""
installed=0
# Shared by the three nodes, as on one machine: the virtual environment and the executables.
shared_dirs=(--prefix "$work/venv" --bin-dir "$work/bin" --calicoctl-dir "$work/bin")

# node_env N: calico-node's settings file on node N, as install-cni.sh wrote it.
node_env() { echo "$(node_dir "$1")/calico-node.env"; }
# in_node N COMMAND...: COMMAND in node N's network namespace.
in_node() { local n=$1; shift; ip netns exec "$(node_ns "$n")" "$@"; }
# with_node_env N COMMAND...: COMMAND in node N with calico-node's settings of that node.
with_node_env() { local n=$1; shift; in_node "$n" sh -ac ". $(node_env "$n"); exec \"\$@\"" sh "$@"; }
# cni VERB N: cnitool VERB of the network "calico" for pod N, on node N.
cni() { in_node "$2" env NETCONFPATH="$(node_dir "$2")/net.d" CNI_PATH="$work/bin" cnitool "$1" calico "/var/run/netns/$(pod_name "$2")"; }
# calicoctl ARGS...: the installed calicoctl, run on node1 (etcd is reachable from the nodes only).
calicoctl() { in_node 1 "$work/bin/calicoctl" --etcd-endpoints "$etcd_url" "$@"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds (quietly); its last status.
wait_for() {
    local seconds=$1; shift
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    "$@" >/dev/null 2>&1
}
# json_get EXPR: EXPR of the JSON document `d` read from stdin.
json_get() { "$work/venv/bin/python" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

cleanup() {
    set +e
    trap - EXIT INT TERM
    for n in "${nodes[@]}"; do
        if [ -e "/var/run/netns/$(pod_name "$n")" ]; then
            [ -e "/var/run/netns/$(node_ns "$n")" ] && cni del "$n" >/dev/null 2>&1
            ip netns del "$(pod_name "$n")" 2>/dev/null
        fi
    done
    # calico-node first (it would restart a BIRD that stops under it), then its BIRD, which
    # outlives it by design: `birdc down`, or its pid file's pid.
    for n in "${!node_pid[@]}"; do kill "${node_pid[$n]}" 2>/dev/null && wait "${node_pid[$n]}" 2>/dev/null; done
    for n in "${nodes[@]}"; do
        run=$(node_dir "$n")/run
        [ -f "$run/bird.pid" ] || continue
        bird_pid=$(head -n 1 "$run/bird.pid" 2>/dev/null)
        birdc -s "$run/bird.ctl" down >/dev/null 2>&1
        for _ in $(seq 50); do [ -d "/proc/$bird_pid" ] || break; sleep 0.1; done
        # Only that BIRD (its command line names the node's run directory), were its pid reused.
        if [ -n "$bird_pid" ] && [ -d "/proc/$bird_pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$bird_pid/cmdline" | grep -qF -- "$run/bird.ctl"; then
            kill -9 "$bird_pid" 2>/dev/null
        fi
    done
    [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
    pkill -f -- "--data-dir $work/etcd" 2>/dev/null
    for n in "${nodes[@]}"; do ip netns del "$(node_ns "$n")" 2>/dev/null; done
    ip netns del "$fabric" 2>/dev/null
    [ "$installed" = 1 ] && "$here/scripts/install-cni.sh" "${shared_dirs[@]}" --uninstall >/dev/null 2>&1
    rm -rf "$work"
    # libcni's cached results of the demo's attachments only (cnitool derives the container ID
    # from the netns path); a DEL that ran removed them already.
    for n in "${nodes[@]}"; do
        cid="cnitool-$(printf '%s' "/var/run/netns/$(pod_name "$n")" | sha512sum | cut -c1-20)"
        rm -f "/var/lib/cni/results/calico-$cid-eth0" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

bold "A fabric and three nodes"
# The fabric: a bridge for the nodes' subnet, and etcd on the fabric's address. Each node: an
# uplink on the bridge with its node address and a default route via the fabric (the kernel
# answers proxy ARP for the pods' gateway 169.254.1.1 only when it has a route for the destination
# through another interface), and forwarding on. The fabric learns no pod address: only the routes
# BIRD installs on the nodes carry pod traffic between them.
ip netns add "$fabric"
ip -n "$fabric" link set lo up
# A MAC of its own: a bridge takes its lowest port's otherwise, which changes as nodes join
# (nodes that learnt the old one lose the fabric until their ARP entry is checked again).
ip -n "$fabric" link add fabric0 address 02:ca:11:c0:02:00 type bridge
ip -n "$fabric" addr add "$subnet.1/24" dev fabric0
ip -n "$fabric" link set fabric0 up
for n in "${nodes[@]}"; do
    ns=$(node_ns "$n")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add uplink type veth peer name "node$n" netns "$fabric"
    ip -n "$fabric" link set "node$n" master fabric0 up
    ip -n "$ns" addr add "$(node_ip "$n")/24" dev uplink
    ip -n "$ns" link set uplink up
    ip -n "$ns" route add default via "$subnet.1"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    show "node$n: network namespace $ns, address $(node_ip "$n")/24 on its uplink"
done

# A simple command (not a function) in the background, so $! is etcd itself; in its own session,
# so a Ctrl-C does not stop it before the cleanup's DELs have used it.
setsid ip netns exec "$fabric" etcd --name demo --data-dir "$work/etcd" --listen-client-urls "$etcd_url" \
    --advertise-client-urls "$etcd_url" --listen-peer-urls "http://127.0.0.1:2380" \
    --initial-advertise-peer-urls "http://127.0.0.1:2380" --initial-cluster "demo=http://127.0.0.1:2380" \
    --log-level error --logger zap >"$work/etcd.log" 2>&1 &
etcd_pid=$!
wait_for 10 in_node 1 env ETCDCTL_API=3 etcdctl --endpoints "$etcd_url" endpoint health \
    || { echo "etcd did not start:"; tail "$work/etcd.log"; exit 1; }
show "fabric: network namespace $fabric, bridge fabric0 ($subnet.1/24), a private etcd on $etcd_url"

bold "Installing on each node with scripts/install-cni.sh (plugins, calicoctl, calico-node)"
for n in "${nodes[@]}"; do
    dir=$(node_dir "$n")
    # Each node's own directories (several nodes share this machine's filesystem); no default
    # pool: the demo applies its own.
    NO_DEFAULT_POOLS=true "$here/scripts/install-cni.sh" "${shared_dirs[@]}" --conf-dir "$dir/net.d" \
        --unit-dir "$dir/systemd" --node-env-file "$(node_env "$n")" --run-dir "$dir/run" --state-dir "$dir/state" \
        --nodename "node$n" --ip "$(node_ip "$n")/24" --etcd-endpoints "$etcd_url" --log-file "$dir/cni.log" \
        >"$dir.install.log" 2>&1 || { cat "$dir.install.log"; exit 1; }
    installed=1
    show "node$n: $(tail -n 1 "$dir.install.log")"
done
show "Debian's bird.service: masked ($(node_dir 1)/systemd/bird.service -> $(readlink "$(node_dir 1)/systemd/bird.service"))"
show "calico-node's settings on node1 ($(node_env 1)):"
grep -v '^#' "$(node_env 1)" | sed 's/^/     /'

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

bold "calico-node on each node, started as the installer says"
for n in "${nodes[@]}"; do
    # In its own session, like etcd: a Ctrl-C leaves it to the cleanup, after the DELs.
    setsid ip netns exec "$(node_ns "$n")" sh -ac ". $(node_env "$n"); exec $work/bin/calico-node" \
        >"$(node_dir "$n")/calico-node.log" 2>&1 &
    node_pid[$n]=$!
done
for n in "${nodes[@]}"; do
    if ! wait_for 20 with_node_env "$n" "$work/bin/calico-node" -felix-ready; then
        show "node$n: calico-node is not ready: $(with_node_env "$n" "$work/bin/calico-node" -felix-ready 2>&1 | tail -n 3)"
        tail -n 20 "$(node_dir "$n")/calico-node.log"
        exit 1
    fi
    show "node$n: calico-node ready (pid ${node_pid[$n]}), BIRD's socket $(node_dir "$n")/run/bird.ctl"
done
show "the Node resources it registered (calicoctl get nodes -o wide):"
calicoctl get nodes -o wide | sed 's/^/     /'

bold "BGP: every node peers with the other two (the node-to-node mesh)"
bird_ready=1
for n in "${nodes[@]}"; do
    wait_for 30 with_node_env "$n" "$work/bin/calico-node" -bird-ready || bird_ready=0
done
[ "$bird_ready" = 1 ] || show "(not every session is Established yet: calico-node -bird-ready says why)"
show "calicoctl node status, on node1:"
with_node_env 1 "$work/bin/calicoctl" node status 2>&1 | sed 's/^/     /'

bold "One pod per node, each a network namespace, added through cnitool"
declare -A address iface
for n in "${nodes[@]}"; do
    pod=$(pod_name "$n")
    ip netns add "$pod"
    result=$(cni add "$n")
    address[$n]=$(json_get 'd["ips"][0]["address"].split("/")[0]' <<<"$result")
    iface[$n]=$(json_get 'd["interfaces"][0]["name"]' <<<"$result")
    show "$pod: ${address[$n]}  (on node$n; ${iface[$n]} is its host end)"
done

bold "Routes BIRD installed on node1 (ip route show proto bird): a block of each other node"
# The other nodes' blocks reach node1 within a second or so of their first pod.
has_routes() { [ "$(in_node 1 ip -4 route show proto bird | grep -c " via ")" -ge 2 ]; }
wait_for 15 has_routes || show "(fewer routes than expected so far)"
in_node 1 ip route show proto bird | sed 's/^/   /'
show "and the fabric's routes (no pod address): $(ip -n "$fabric" -4 route show | tr '\n' ';')"

bold "Traffic between nodes"
failed=0
check_ping() { # check_ping LABEL FROM-NAMESPACE TO-ADDRESS
    if ip netns exec "$2" ping -c 1 -W 2 "$3" >/dev/null; then show "$1 ($3): reply"; else show "$1 ($3): NO REPLY"; failed=1; fi
}
check_ping "pod1 on node1 -> pod2 on node2" "$(pod_name 1)" "${address[2]}"
check_ping "pod2 on node2 -> pod3 on node3" "$(pod_name 2)" "${address[3]}"
check_ping "pod3 on node3 -> pod1 on node1" "$(pod_name 3)" "${address[1]}"

bold "Network policy: calico-node enforces Calico's policies and profiles on every pod"
# check_refused LABEL FROM-NAMESPACE TO-ADDRESS: a ping that policy must drop (half a second is
# plenty for a reply between namespaces of one machine).
check_refused() {
    if ip netns exec "$2" ping -c 1 -W 0.5 "$3" >/dev/null; then show "$1 ($3): A REPLY, although policy should drop it"; failed=1
    else show "$1 ($3): no reply, dropped by policy as expected"; fi
}
# refused FROM-NAMESPACE TO-ADDRESS: the ping gets no reply (to wait for a policy to arrive).
refused() { ! ip netns exec "$1" ping -c 1 -W 0.5 "$2" >/dev/null; }
show "no policy yet: pods of network \"calico\" get its profile: egress allowed, ingress only from has(calico)"
check_refused "node1 -> pod3 on node3, from outside the network" "$(node_ns 1)" "${address[3]}"
cat >"$work/allow-nodes.yaml" <<EOF_GNP
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-nodes
spec:
  order: 1000
  selector: all()
  types: [Ingress]
  ingress:
  - action: Allow
    source:
      nets: [$subnet.0/24]
  - action: Pass   # a policy that applies ends its tier with a drop: Pass hands the rest to the profiles
EOF_GNP
sed 's/^/   | /' "$work/allow-nodes.yaml"
calicoctl apply -f "$work/allow-nodes.yaml" | sed 's/^/   /'
wait_for 10 ip netns exec "$(node_ns 1)" ping -c 1 -W 1 "${address[3]}" || true
check_ping "node1 -> pod3 on node3, allowed from the nodes' subnet" "$(node_ns 1)" "${address[3]}"
check_ping "pod2 on node2 -> pod3 on node3, passed on to the profile" "$(pod_name 2)" "${address[3]}"

# pod1's and pod2's WorkloadEndpoints (cnitool's pods are in namespace default), found by their
# host interfaces, get labels for the policy's selectors.
read -r wep1 wep2 < <(calicoctl get workloadendpoints -o json \
    | json_get "' '.join({w['spec']['interfaceName']: w['metadata']['name'] for w in d['items']}[i] for i in ('${iface[1]}', '${iface[2]}'))")
calicoctl label workloadendpoint "$wep1" app=client | sed 's/^/   /'
calicoctl label workloadendpoint "$wep2" app=db | sed 's/^/   /'
cat >"$work/deny-client.yaml" <<'EOF_NP'
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: deny-client
  namespace: default
spec:
  order: 100      # before allow-nodes (1000), whose Pass would skip it
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    source:
      selector: app == 'client'
EOF_NP
sed 's/^/   | /' "$work/deny-client.yaml"
calicoctl apply -f "$work/deny-client.yaml" | sed 's/^/   /'
wait_for 10 refused "$(pod_name 1)" "${address[2]}" || true
check_refused "pod1 on node1 -> pod2 on node2, denied by deny-client" "$(pod_name 1)" "${address[2]}"
check_ping "pod3 on node3 -> pod2 on node2, not a client" "$(pod_name 3)" "${address[2]}"
show "what applies to pod2, in order (calicoctl node policy $wep2):"
calicoctl node policy "$wep2" | sed 's/^/     /'
calicoctl delete networkpolicy deny-client -n default | sed 's/^/   /'
wait_for 10 ip netns exec "$(pod_name 1)" ping -c 1 -W 1 "${address[2]}" || true
check_ping "pod1 on node1 -> pod2 on node2, deny-client deleted" "$(pod_name 1)" "${address[2]}"

bold "NAT outgoing: the fabric ($subnet.1) has no route back to the pool"
if ip netns exec "$(pod_name 1)" ping -c 1 -W 1 "$subnet.1" >/dev/null; then
    show "pod1 -> the fabric: a reply, although natOutgoing is off"; failed=1
else
    show "pod1 -> the fabric: no reply (natOutgoing is off: the fabric cannot answer 198.18.0.x)"
fi
calicoctl patch ippool demo-pool -p '{"spec": {"natOutgoing": true}}' | sed 's/^/   /'
wait_for 10 ip netns exec "$(pod_name 1)" ping -c 1 -W 1 "$subnet.1" || true
check_ping "pod1 -> the fabric, masqueraded to node1's address by calico-node's nftables table" "$(pod_name 1)" "$subnet.1"
show "node1's rule (nft list chain ip calico nat-outgoing):"
in_node 1 nft list chain ip calico nat-outgoing | grep -E 'saddr|masquerade' | sed 's/^\s*/     /'

bold "VXLAN: the same pool, encapsulated (vxlanMode: Always), as on a network that drops pod routes"
calicoctl patch ippool demo-pool -p '{"spec": {"vxlanMode": "Always"}}' | sed 's/^/   /'
# BIRD keeps an encapsulated pool's routes out of the kernel; calico-node allocates each node a
# tunnel address and routes the other nodes' blocks through vxlan.calico (protocol 80).
vxlan_routes() { [ "$(in_node 1 ip -4 route show proto 80 | grep -c "dev vxlan.calico")" -ge 2 ] && [ -z "$(in_node 1 ip -4 route show proto bird)" ]; }
wait_for 20 vxlan_routes || show "(fewer VXLAN routes than expected so far)"
show "node1: $(in_node 1 ip -d link show vxlan.calico | grep -o 'vxlan id [0-9]* local [0-9.]* dev [a-z0-9]* .*dstport [0-9]*' | tr -s ' ')"
show "tunnel addresses from IPAM (calicoctl get nodes -o json):"
calicoctl get nodes -o json | json_get "'\\n'.join('     %s: %s' % (n['metadata']['name'], n['spec'].get('ipv4VXLANTunnelAddr')) for n in d['items'])"
show "node1's routes (ip route show proto 80):"
in_node 1 ip route show proto 80 | sed 's/^/     /'
show "the pod MTU calico-node wrote for new pods: $(cat "$(node_dir 1)/state/mtu") (the uplink's 1500 less VXLAN's 50)"
check_ping "pod1 on node1 -> pod2 on node2, over VXLAN" "$(pod_name 1)" "${address[2]}"
check_ping "pod3 on node3 -> pod1 on node1, over VXLAN" "$(pod_name 3)" "${address[1]}"

bold "IPAM as the operator sees it (calicoctl ipam show --show-blocks)"
calicoctl ipam show --show-blocks | sed 's/^/   /'

bold "Deleting the pods through cnitool"
for n in "${nodes[@]}"; do
    cni del "$n"
    ip netns del "$(pod_name "$n")"
    show "$(pod_name "$n") deleted"
done
bold "The pods' addresses are free again (what stays in use is each node's VXLAN tunnel address)"
calicoctl ipam show | sed 's/^/   /'

if [ "$failed" = 1 ]; then
    bold "Some pings got no reply: the demo failed"
    for n in "${nodes[@]}"; do
        echo "-- node$n: routes"; in_node "$n" ip route show | sed 's/^/   /'
        echo "-- node$n: calico-node's log (last lines)"; tail -n 15 "$(node_dir "$n")/calico-node.log"
    done
    exit 1
fi
bold "Done: removing the pods, calico-node and BIRD, the nodes, etcd and the installation"
