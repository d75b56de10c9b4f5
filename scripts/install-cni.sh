#!/usr/bin/env bash
# Install the calico and calico-ipam CNI plugins, calicoctl and the per-node daemon calico-node on
# this node (run as root).
#
#   scripts/install-cni.sh [options]        install, or bring an installation up to date
#   scripts/install-cni.sh --uninstall      remove exactly what an earlier run installed
#
# Every option has an environment variable; a second run with the same settings changes
# nothing (no file or directory is written) and says so. The project is pip-installed from a
# temporary copy of the sources, so the checkout is never written to; pip's own variables
# (PIP_INDEX_URL, PIP_NO_INDEX, PIP_FIND_LINKS, ...) apply, e.g. for a node without PyPI access.
set -euo pipefail

usage() {
    cat <<'USAGE'
Options (environment variable in brackets, then the default):
  --prefix DIR            [CALICO_CNI_PREFIX]   /opt/calico-cni   virtual environment of the plugins
  --bin-dir DIR           [CNI_BIN_DIR]         /opt/cni/bin      where runtimes look for plugins
  --conf-dir DIR          [CNI_CONF_DIR]        /etc/cni/net.d    where runtimes look for network configs
  --conf-name NAME        [CNI_CONF_NAME]       10-calico.conflist
  --etcd-endpoints URLS   [ETCD_ENDPOINTS]      http://127.0.0.1:2379
  --etcd-ca-cert-file F   [ETCD_CA_CERT_FILE]
  --etcd-cert-file F      [ETCD_CERT_FILE]
  --etcd-key-file F       [ETCD_KEY_FILE]
                          [ETCD_USERNAME, ETCD_PASSWORD] etcd credentials, environment only (never
                          a flag: ps shows flags); written only to calico-node's environment file
  --nodename NAME         [NODENAME]            the host name, lower-cased
  --mtu N                 [CNI_MTU]             decided by the plugin (see README)
  --ipv6                  [CALICO_IPV6=true]    also assign IPv6 addresses (calico-node then
                          autodetects the node's IPv6 address unless --ip6 says otherwise)
  --log-file PATH         [CALICO_LOG_FILE]     /var/log/calico/cni/cni.log
  --calicoctl-dir DIR     [CALICOCTL_DIR]       /usr/local/bin    calicoctl and calico-node
  --python PATH           [PYTHON]              the first Python 3.11+ found (never a pyenv shim)
calico-node, the node's daemon (the plugins' socket, the Node resource, BGP routes with BIRD):
  --run-dir DIR           [CALICO_RUN_DIR]      /var/run/calico   its sockets: cni.sock, bird.ctl
  --state-dir DIR         [CALICO_STATE_DIR]    /var/lib/calico   nodename and mtu files, bird.cfg
  --node-env-file PATH    [CALICO_NODE_ENV_FILE] /etc/calico/calico-node.env  its settings (0600)
  --ip ADDR/LEN           [IP]                  the node's IPv4 address, autodetect or none
                                                (unset: the stored one, else autodetected)
  --ip6 ADDR/LEN          [IP6]                 the same for IPv6 (unset: the stored one; with
                                                --ipv6: autodetect)
  --ip-autodetection-method M  [IP_AUTODETECTION_METHOD]  first-found (also --ip6-autodetection-method)
  --as N                  [AS]                  the node's AS (unset: the stored one, else the cluster's)
  --router-id ID          [CALICO_ROUTER_ID]    the node's IPv4 address (hash: one from the name)
  --backend B             [CALICO_NETWORKING_BACKEND] bird   (none: no BIRD, no routes)
                          Set in the installer's environment, CALICO_IPV4POOL_*, CALICO_IPV6POOL_*,
                          NO_DEFAULT_POOLS, FELIX_IPV6SUPPORT, DISABLE_NODE_IP_CHECK,
                          CALICO_NODENAME_FILE, CALICO_LOG_LEVEL, AUTODETECT_POLL_INTERVAL,
                          CLUSTER_TYPE and ETCD_TIMEOUT are copied to calico-node's environment file
  --no-node               [CALICO_NODE=false]   no calico-node (nor BIRD): every plugin run does all
                          its work in-process (slower, see README "Performance") and nothing
                          routes between nodes (--no-agent, CALICO_CNI_AGENT=false: the same)
  --agent-socket PATH     [CALICO_CNI_AGENT_SOCKET] kept for old command lines: DIR/cni.sock is
                          --run-dir DIR
  --unit-dir DIR          [SYSTEMD_UNIT_DIR]    /etc/systemd/system  where calico-node.service goes;
                          it is written when systemd runs here or this option is given, and started
                          when systemd runs (otherwise the installer prints the command that starts
                          it). Debian's bird.service is masked there (a link to /dev/null).
  --uninstall             remove what was installed (listed in PREFIX/installed-files): its files,
                          the virtual environment, the directories it created, if empty, and the
                          mask of bird.service it made
USAGE
}

here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${CALICO_CNI_PREFIX:-/opt/calico-cni}
bin_dir=${CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/etc/cni/net.d}
conf_name=${CNI_CONF_NAME:-10-calico.conflist}
etcd_endpoints=${ETCD_ENDPOINTS:-http://127.0.0.1:2379}
etcd_ca=${ETCD_CA_CERT_FILE:-}
etcd_cert=${ETCD_CERT_FILE:-}
etcd_key=${ETCD_KEY_FILE:-}
nodename=${NODENAME:-}
mtu=${CNI_MTU:-}
ipv6=${CALICO_IPV6:-false}
log_file=${CALICO_LOG_FILE:-}
ctl_dir=${CALICOCTL_DIR:-/usr/local/bin}
python=${PYTHON:-}
default_run_dir=/var/run/calico
run_dir=${CALICO_RUN_DIR:-$default_run_dir}
state_dir=${CALICO_STATE_DIR:-/var/lib/calico}
env_file=${CALICO_NODE_ENV_FILE:-/etc/calico/calico-node.env}
node_ip=${IP:-}
node_ip6=${IP6:-}
ip_method=${IP_AUTODETECTION_METHOD:-}
ip6_method=${IP6_AUTODETECTION_METHOD:-}
as_number=${AS:-}
router_id=${CALICO_ROUTER_ID:-}
backend=${CALICO_NETWORKING_BACKEND:-}
agent_socket=${CALICO_CNI_AGENT_SOCKET:-}
node=${CALICO_NODE:-${CALICO_CNI_AGENT:-true}}
unit_dir=${SYSTEMD_UNIT_DIR:-}
uninstall=0

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift ;;
        --bin-dir) bin_dir=$2; shift ;;
        --conf-dir) conf_dir=$2; shift ;;
        --conf-name) conf_name=$2; shift ;;
        --etcd-endpoints) etcd_endpoints=$2; shift ;;
        --etcd-ca-cert-file) etcd_ca=$2; shift ;;
        --etcd-cert-file) etcd_cert=$2; shift ;;
        --etcd-key-file) etcd_key=$2; shift ;;
        --nodename) nodename=$2; shift ;;
        --mtu) mtu=$2; shift ;;
        --ipv6) ipv6=true ;;
        --log-file) log_file=$2; shift ;;
        --calicoctl-dir) ctl_dir=$2; shift ;;
        --python) python=$2; shift ;;
        --run-dir) run_dir=$2; shift ;;
        --state-dir) state_dir=$2; shift ;;
        --node-env-file) env_file=$2; shift ;;
        --ip) node_ip=$2; shift ;;
        --ip6) node_ip6=$2; shift ;;
        --ip-autodetection-method) ip_method=$2; shift ;;
        --ip6-autodetection-method) ip6_method=$2; shift ;;
        --as) as_number=$2; shift ;;
        --router-id) router_id=$2; shift ;;
        --backend) backend=$2; shift ;;
        --agent-socket) agent_socket=$2; shift ;;
        --no-node|--no-agent) node=false ;;
        --unit-dir) unit_dir=$2; shift ;;
        --uninstall) uninstall=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-cni.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '%s\n' "$*"; }
die() { printf 'install-cni.sh: %s\n' "$*" >&2; exit 1; }
# sh_word WORD: WORD as a POSIX shell reads it back, for the commands this installer prints: as it
# is when it holds only characters no shell treats specially, else single-quoted (' as '\'').
sh_word() {
    local q="'"
    case "$1" in
        ''|*[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "${1//$q/$q\\$q$q}" ;;
        *) printf '%s' "$1" ;;
    esac
}
# unit_word WORD: WORD as systemd reads it back from ExecStart=: % (a specifier) and $ (a variable)
# doubled, and double-quoted, with \ and " escaped, when it holds white space, a quote or a backslash.
unit_word() {
    local word=${1//%/%%}
    word=${word//\$/\$\$}
    case "$word" in
        *[[:space:]\"\'\\]*) word=${word//\\/\\\\}; printf '"%s"' "${word//\"/\\\"}" ;;
        *) printf '%s' "$word" ;;
    esac
}

[ "$(id -u)" -eq 0 ] || die "run as root: it writes to $bin_dir and $conf_dir"
manifest="$prefix/installed-files"
unit_name=calico-node.service
# calico-node replaced the warm agent of earlier versions: its unit and launcher are retired.
old_unit=calico-cni-agent.service
systemd_runs() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
case "$node" in true|false) ;; *) die "CALICO_NODE (or CALICO_CNI_AGENT) must be true or false, got $node" ;; esac
if [ -n "$agent_socket" ]; then
    case "$agent_socket" in /*) ;; *) die "--agent-socket must be an absolute path, got $agent_socket" ;; esac
    [ "$(basename "$agent_socket")" = cni.sock ] \
        || die "--agent-socket: calico-node serves <run dir>/cni.sock, so the socket must be named cni.sock (got $agent_socket); use --run-dir DIR"
    run_dir=$(dirname "$agent_socket")
fi
for dir_option in "--prefix=$prefix" "--bin-dir=$bin_dir" "--conf-dir=$conf_dir" "--calicoctl-dir=$ctl_dir" \
        "--run-dir=$run_dir" "--state-dir=$state_dir" "--node-env-file=$env_file" ${unit_dir:+"--unit-dir=$unit_dir"}; do
    case "${dir_option#*=}" in /*) ;; *) die "${dir_option%%=*} must be an absolute path, got ${dir_option#*=}" ;; esac
done
# The installed commands start with #!PREFIX/bin/python, which the kernel splits at white space.
case "$prefix" in *[[:space:]]*) die "--prefix must not hold white space (the installed commands start with #!$prefix/bin/python), got '$prefix'" ;; esac
backend=${backend,,}
case "$backend" in ''|bird|none|vxlan) ;; *) die "--backend must be bird, vxlan or none, got $backend" ;; esac
bird_wanted=0
[ "$node" = false ] || case "$backend" in ''|bird) bird_wanted=1 ;; esac
mask_dir=${unit_dir:-/etc/systemd/system}
mask_path="$mask_dir/bird.service"

# The manifest lists every file installed, then "mask:<path>" for Debian's bird.service when this
# installer masked it, then every directory an installation created (with a trailing /):
# --uninstall removes those files and the mask, the virtual environment, and those directories when
# they are empty, nothing else.
if [ "$uninstall" = 1 ]; then
    [ -f "$manifest" ] || { say "nothing to uninstall: $manifest does not exist"; exit 0; }
    if systemd_runs; then
        for unit in "$unit_name" "$old_unit"; do
            if grep -q "^/etc/systemd/system/$unit\$" "$manifest"; then
                systemctl disable --now "$unit" >/dev/null 2>&1 && say "stopped and disabled $unit"
            fi
        done
    fi
    # calico-node leaves BIRD running when it stops (so restarts keep the routes); a BIRD on the
    # installed run directory's socket is stopped with it, here, where the daemon is gone.
    # Its environment file: the one the installed unit names (any name --node-env-file gave), else
    # the installed calico-node.env. It is read as calico-node's documented command reads it (sh).
    installed_env=""
    installed_unit=$(grep -m1 "/$unit_name\$" "$manifest" || true)
    if [ -n "$installed_unit" ] && [ -f "$installed_unit" ]; then
        installed_env=$(sed -n 's/^EnvironmentFile=//p' "$installed_unit" | head -n 1)
        installed_env=${installed_env//%%/%}
    fi
    [ -n "$installed_env" ] || installed_env=$(grep -m1 '/calico-node\.env$' "$manifest" || true)
    if [ -n "$installed_env" ] && [ -f "$installed_env" ]; then
        installed_run=$(env -i sh -c '. "$1" && printf %s "${CALICO_RUN_DIR:-}"' sh "$installed_env" 2>/dev/null || true)
        if [ -n "$installed_run" ] && [ -S "$installed_run/bird.ctl" ]; then
            if systemd_runs && grep -q "^/etc/systemd/system/$unit_name\$" "$manifest"; then
                birdc -s "$installed_run/bird.ctl" down >/dev/null 2>&1 && say "stopped calico-node's BIRD ($installed_run/bird.ctl)"
            else
                say "note: a BIRD may still answer on $installed_run/bird.ctl; once calico-node is stopped, stop it with: birdc -s $(sh_word "$installed_run/bird.ctl") down"
            fi
        fi
    fi
    while read -r path; do
        case "$path" in ''|*/|mask:*) continue ;; esac
        if [ -e "$path" ] || [ -L "$path" ]; then rm -f "$path" && say "removed $path"; fi
    done < "$manifest"
    # Unmask only a mask this installer made, and only while it is still a link to /dev/null.
    while read -r mask; do
        mask=${mask#mask:}
        [ "$(readlink "$mask" 2>/dev/null)" = /dev/null ] || continue
        if systemd_runs && [ "$mask" = /etc/systemd/system/bird.service ]; then
            systemctl unmask bird.service >/dev/null 2>&1 || rm -f "$mask"
        else
            rm -f "$mask"
        fi
        say "unmasked bird.service (removed the link $mask -> /dev/null); it stays disabled"
    done < <(grep '^mask:' "$manifest" || true)
    systemd_runs && systemctl daemon-reload
    created_dirs=$(grep '/$' "$manifest" || true)
    if [ -f "$prefix/pyvenv.cfg" ]; then
        rm -rf "$prefix"
        say "removed $prefix"
    else
        rm -f "$manifest"
        say "kept $prefix: it is not a virtual environment (removed only $manifest)"
    fi
    # Deepest first: a child sorts after its parent.
    while read -r dir; do
        [ -n "$dir" ] || continue
        dir=${dir%/}
        [ -d "$dir" ] || continue
        if rmdir "$dir" 2>/dev/null; then say "removed $dir"; else say "kept $dir: it is not empty"; fi
    done < <(printf '%s\n' "$created_dirs" | LC_ALL=C sort -r)
    exit 0
fi

# --- a real interpreter, Python 3.11 or newer -----------------------------------------------
find_python() {
    local candidate path real
    for candidate in "$@"; do
        path=$(command -v "$candidate" 2>/dev/null) || continue
        real=$("$path" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null) || continue
        case "$real" in ''|*/shims/*) continue ;; esac
        echo "$real"
        return 0
    done
    return 1
}
if [ -n "$python" ]; then
    given=$python
    python=$(find_python "$given") || die "$given is not Python 3.11 or newer (or is a pyenv shim)"
else
    python=$(find_python /usr/bin/python3 /usr/local/bin/python3 python3.13 python3.12 python3.11 python3) \
        || die "Python 3.11 or newer is needed (Debian 12: apt-get install python3 python3-venv)"
fi
[ -n "$nodename" ] || nodename=$(hostname | tr '[:upper:]' '[:lower:]')
case "$mtu" in *[!0-9]*) die "--mtu must be a whole number of bytes (e.g. 1440), got $mtu" ;; esac

# calico-node's environment file: the installer's etcd and node settings, then the calico-node
# variables set in the installer's environment. Values are single-quoted, which systemd's
# EnvironmentFile and a POSIX shell read alike (verbatim: nothing expanded, no escapes); a single
# quote in a value is written as '"'"' (close, a double-quoted quote, reopen), which both read back
# as one quote. A line break is refused.
node_env=()
node_vars=()  # the same settings as NAME=VALUE, for the check below
# calico-node's variables the installer has no option for, copied when set (with CALICO_IPV4POOL_*
# and CALICO_IPV6POOL_*). CALICO_LOG_FILE is not one: it is the installer's --log-file (the plugins').
passed_through="NO_DEFAULT_POOLS FELIX_IPV6SUPPORT DISABLE_NODE_IP_CHECK CALICO_NODENAME_FILE CALICO_LOG_LEVEL AUTODETECT_POLL_INTERVAL CLUSTER_TYPE ETCD_TIMEOUT"
env_line() { # env_line NAME VALUE: one line of the file, when VALUE is not empty
    [ -n "$2" ] || return 0
    case "$2" in *$'\n'*) die "$1 cannot be written to $env_file: it holds a line break" ;; esac
    local q="'"
    node_env+=("$1='${2//$q/$q\"$q\"$q}'")
    node_vars+=("$1=$2")
}
if [ "$node" = true ]; then
    [ -n "$node_ip6" ] || [ "$ipv6" != true ] || node_ip6=autodetect
    env_line DATASTORE_TYPE etcdv3
    env_line ETCD_ENDPOINTS "$etcd_endpoints"
    env_line ETCD_CA_CERT_FILE "$etcd_ca"
    env_line ETCD_CERT_FILE "$etcd_cert"
    env_line ETCD_KEY_FILE "$etcd_key"
    env_line ETCD_USERNAME "${ETCD_USERNAME:-}"
    env_line ETCD_PASSWORD "${ETCD_PASSWORD:-}"
    env_line NODENAME "$nodename"
    env_line CALICO_RUN_DIR "$run_dir"
    env_line CALICO_STATE_DIR "$state_dir"
    env_line CNI_NET_DIR "$conf_dir"  # calico-node warns when the conflist's mtu has no room for the encapsulation
    env_line IP "$node_ip"
    env_line IP6 "$node_ip6"
    env_line IP_AUTODETECTION_METHOD "$ip_method"
    env_line IP6_AUTODETECTION_METHOD "$ip6_method"
    env_line AS "$as_number"
    env_line CALICO_ROUTER_ID "$router_id"
    env_line CALICO_NETWORKING_BACKEND "$backend"
    while read -r name; do
        env_line "$name" "${!name}"
    done < <(compgen -e | grep -E "^(CALICO_IPV4POOL_|CALICO_IPV6POOL_)[A-Z0-9_]+\$|^(${passed_through// /|})\$" | LC_ALL=C sort || true)
    # calico-node's own rules check these settings now, so that a value it would refuse stops the
    # installation here, naming the variable, instead of a unit that fails at every restart. Its
    # settings module is standard library only: the checkout's copy, run by the interpreter found
    # above, writing no bytecode (the checkout is never written to) and reading no file.
    refusal=$(env -i "${node_vars[@]}" "$python" -I -B -c '
import os, sys
sys.path.insert(0, sys.argv[1])
from calico_cni.errors import CalicoError
from calico_cni.node.settings import from_args
try:
    from_args([], os.environ)
except CalicoError as exc:
    sys.exit(str(exc))
' "$here" 2>&1) || die "calico-node would refuse its settings: $refusal (--help names the option of each variable)"
fi

changes=0
package_changed=0
installed=()
masks=()
created_dirs=()
note() { say "$*"; changes=$((changes + 1)); }
work=$(mktemp -d -t install-cni.XXXXXX)
trap 'rm -rf "$work"' EXIT

# make_dir DIR: create DIR and its missing parents, remembering which ones this installation made
# (an earlier run's record is kept) so that --uninstall can remove them.
make_dir() {
    local dir
    dir=$(realpath -m "$1")
    while [ "$dir" != / ]; do
        if [ ! -d "$dir" ] || grep -qxF "$dir/" "$manifest" 2>/dev/null; then created_dirs+=("$dir"); fi
        dir=$(dirname "$dir")
    done
    mkdir -p "$1"
}

# --- the virtual environment -----------------------------------------------------------------
venv_python="$prefix/bin/python"
if [ ! -x "$venv_python" ]; then
    if [ -d "$prefix" ] && [ -n "$(ls -A "$prefix")" ] && [ ! -f "$prefix/pyvenv.cfg" ]; then
        die "$prefix exists and is not a calico-cni installation; give --prefix a new or empty directory"
    fi
    make_dir "$(dirname "$prefix")"
    "$python" -m venv "$prefix" || die "cannot create a virtual environment (Debian: apt-get install python3-venv)"
    note "created the virtual environment $prefix with $python"
fi
make_dir "$prefix"
source_stamp=$(cd "$here" && find pyproject.toml calico_cni calico_ipam -type f -name '*.py' -o -type f -name pyproject.toml \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$prefix/.source-stamp" 2>/dev/null)" != "$source_stamp" ]; then
    log="$prefix/pip-install.log"
    # Build from a clean copy of the sources: building in the checkout would leave build/ and
    # *.egg-info there, and setuptools would also install modules that an earlier build left in
    # build/lib although they are gone from the sources.
    src="$work/src"
    mkdir "$src"
    (cd "$here" && tar --exclude=__pycache__ -cf - pyproject.toml calico_cni calico_ipam \
        $(for f in README.md LICENSE; do [ -e "$f" ] && echo "$f"; done)) | tar -xf - -C "$src"
    if ! "$venv_python" -m pip install --upgrade "$src" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "pip install failed; the full log is $log"
    fi
    echo "$source_stamp" > "$prefix/.source-stamp"
    note "installed the plugins' Python package into $prefix"
    package_changed=1
fi

# --- BIRD 2 (Debian's bird2), with Debian's own bird.service masked ---------------------------
# Debian's bird.service starts enabled, with /etc/bird/bird.conf: its kernel protocol deletes every
# "proto bird" route it did not install, i.e. every route calico-node's BIRD installs. So it is
# stopped, disabled and masked (masked before bird2 is installed, so the package cannot start it).
# Where systemd does not run, the mask is the link systemd would make, in the unit directory.
mask_bird() {
    if [ "$(readlink "$mask_path" 2>/dev/null)" = /dev/null ]; then
        # Masked already: ours when an earlier run recorded it, else the administrator's (kept as is).
        if grep -qxF "mask:$mask_path" "$manifest" 2>/dev/null; then masks+=("$mask_path"); fi
        return 0
    fi
    if [ -e "$mask_path" ] || [ -L "$mask_path" ]; then
        say "warning: $mask_path exists and is not a mask; Debian's bird.service is left alone (its kernel protocol deletes calico-node's routes if it runs)"
        return 0
    fi
    if systemd_runs && [ -z "$unit_dir" ]; then
        if systemctl cat bird.service >/dev/null 2>&1; then
            systemctl disable --now bird.service >/dev/null 2>&1 || true
        fi
        systemctl mask bird.service >/dev/null || die "systemctl mask bird.service failed"
        note "stopped, disabled and masked Debian's bird.service (calico-node runs its own BIRD)"
    else
        make_dir "$mask_dir"
        ln -s /dev/null "$mask_path"
        note "masked Debian's bird.service: $mask_path -> /dev/null"
    fi
    masks+=("$mask_path")
    # Recorded at once: should a later step fail, --uninstall (or the next run) still knows whose it is.
    (umask 077; printf 'mask:%s\n' "$mask_path" >> "$manifest")
}

# stop_package_bird: where systemd does not run, a BIRD the package started (from /etc/init.d/bird,
# say) is stopped, but only one that is unmistakably the package's: in this network namespace, with
# the package's configuration (/etc/bird/bird.conf) and control socket (/run/bird/bird.ctl), and
# only when the installation is for this machine (no --unit-dir; with one, a warning says it runs).
# calico-node's BIRDs, and any a test or an operator starts, name their own socket (-s) and are
# never touched.
stop_package_bird() {
    local pid here_ns word socket config next
    here_ns=$(readlink /proc/self/ns/net)
    for pid in $(pgrep -x bird || true); do
        [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$here_ns" ] || continue
        socket=/run/bird/bird.ctl config=/etc/bird/bird.conf next=""
        while IFS= read -r -d '' word; do
            case "$next" in s) socket=$word; next=""; continue ;; c) config=$word; next=""; continue ;; esac
            case "$word" in -s) next=s ;; -c) next=c ;; -s?*) socket=${word#-s} ;; -c?*) config=${word#-c} ;; esac
        done < "/proc/$pid/cmdline" || continue
        case "$socket" in /run/bird/bird.ctl|/var/run/bird/bird.ctl) ;; *) continue ;; esac
        [ "$config" = /etc/bird/bird.conf ] || continue
        if [ -n "$unit_dir" ]; then
            # Units for another root (an image, a demo's node): this machine's BIRD is not ours to stop.
            say "warning: Debian's BIRD runs here (pid $pid, /etc/bird/bird.conf); a calico-node on this machine needs it stopped: birdc -s $socket down"
            continue
        fi
        birdc -s "$socket" down >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        note "stopped Debian's BIRD (pid $pid, /etc/bird/bird.conf): it would delete calico-node's routes"
    done
}

if [ "$bird_wanted" = 1 ]; then
    mask_bird
    if ! command -v bird >/dev/null && [ ! -x /usr/sbin/bird ]; then
        command -v apt-get >/dev/null || die "BIRD 2 is needed (calico-node's routes): install bird2, or give --backend none"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bird2 >"$work/apt.log" 2>&1 \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bird2 >"$work/apt.log" 2>&1; } \
            || { tail -n 20 "$work/apt.log" >&2; die "apt-get install bird2 failed"; }
        note "installed Debian's bird2 (BIRD 2; uninstalling calico-cni leaves the package)"
    fi
    systemd_runs || stop_package_bird
else
    # No BIRD wanted (--no-node, --backend none): a mask an earlier run made stays, and stays ours.
    while read -r mask; do
        [ "$(readlink "${mask#mask:}" 2>/dev/null)" != /dev/null ] || masks+=("${mask#mask:}")
    done < <(grep '^mask:' "$manifest" 2>/dev/null || true)
fi

# --- Debian packages calico-node runs ---------------------------------------------------------
# apt_install PACKAGE COMMAND WHY NOTE: install Debian's PACKAGE on a node unless COMMAND exists.
apt_install() {
    [ "$node" != false ] || return 0
    command -v "$2" >/dev/null || [ -x "/usr/sbin/$2" ] && return 0
    command -v apt-get >/dev/null || die "$1 is needed ($3): install Debian's $1"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >"$work/apt.log" 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >"$work/apt.log" 2>&1; } \
        || { tail -n 20 "$work/apt.log" >&2; die "apt-get install $1 failed"; }
    note "installed Debian's $1 ($4; uninstalling calico-cni leaves the package)"
}
# nftables: calico-node keeps its tables `ip calico` / `ip6 calico` (NAT outgoing, VXLAN filters,
# network policy) with `nft`, whatever the backend. Only the package is installed: Debian's
# nftables.service is left as the package ships it (not enabled), never enabled here, because its
# /etc/nftables.conf starts with `flush ruleset`, which would wipe calico-node's tables and
# portmap's rules at every start.
apt_install nftables nft "calico-node's NAT outgoing, VXLAN rules and network policy" \
    "nft; its nftables.service is not enabled: it would flush calico-node's tables"
# No conntrack package: when a pod is deleted, calico-node removes the conntrack entries of its
# addresses (as Felix does, so a new pod given the same address never inherits an old pod's flows)
# over netlink itself.

# --- files, written only when their content changes -------------------------------------------
# put_file PATH MODE: content on stdin. An unchanged file is not touched, nor is its directory.
put_file() {
    local path=$1 mode=$2 tmp
    cat > "$work/candidate"
    make_dir "$(dirname "$path")"
    if ! { [ -f "$path" ] && [ ! -L "$path" ] && cmp -s "$work/candidate" "$path" && [ "$(stat -c %a "$path")" = "${mode#0}" ]; }; then
        # mktemp creates the file 0600: the content is never readable by others, not even briefly.
        tmp=$(mktemp "$(dirname "$path")/.install-cni.XXXXXX")
        chmod "$mode" "$tmp"
        cat "$work/candidate" > "$tmp"
        mv -f "$tmp" "$path"
        note "wrote $path"
    fi
    installed+=("$path")
}

# put_launcher DIR NAME [MODULE:FUNCTION]: DIR/NAME, an executable that runs the venv's interpreter
# directly, as `python -I -S` with the package's directories on sys.path (calico_cni/launcher.py
# says why). (put_file reads files or process substitutions, not pipes: a pipe would run it in a
# subshell and lose what it records.)
put_launcher() {
    "$venv_python" -I -m calico_cni.launcher "${3:-$2}" > "$work/launcher" || die "cannot render the $2 launcher"
    put_file "$1/$2" 0755 < "$work/launcher"
}
put_launcher "$bin_dir" calico
put_launcher "$bin_dir" calico-ipam
put_launcher "$ctl_dir" calicoctl
[ "$node" = false ] || put_launcher "$ctl_dir" calico-node calico_cni.node.main:main

# The chained plugins of the default conflist: Debian keeps them in /usr/lib/cni.
for plugin in portmap bandwidth; do
    if [ ! -e "$bin_dir/$plugin" ]; then
        if [ -x "/usr/lib/cni/$plugin" ]; then
            ln -s "/usr/lib/cni/$plugin" "$bin_dir/$plugin"
            note "linked $bin_dir/$plugin to /usr/lib/cni/$plugin"
            installed+=("$bin_dir/$plugin")
        else
            say "warning: $plugin is not in $bin_dir or /usr/lib/cni (Debian: apt-get install containernetworking-plugins); the default conflist chains it"
        fi
    elif [ -L "$bin_dir/$plugin" ] && grep -qxF "$bin_dir/$plugin" "$manifest" 2>/dev/null; then
        installed+=("$bin_dir/$plugin")
    fi
done

# The network configuration. It names TLS files, never secrets, but etcd credentials may be
# added to it by hand, so it is private to root.
# The conflist names calico-node's socket only when it is not the plugins' default.
conf_socket=""
[ "$node" = false ] || [ "$run_dir" = "$default_run_dir" ] || conf_socket="$run_dir/cni.sock"
# ... and calico-node's MTU file likewise (the plugin reads /var/lib/calico/mtu by default).
conf_mtu_file=""
[ "$node" = false ] || [ "$state_dir" = /var/lib/calico ] || conf_mtu_file="$state_dir/mtu"
conflist=$("$venv_python" "$here/scripts/render-conflist.py" "$here/conf/10-calico.conflist" \
    "ETCD_ENDPOINTS=$etcd_endpoints" "ETCD_CA_CERT_FILE=$etcd_ca" "ETCD_CERT_FILE=$etcd_cert" \
    "ETCD_KEY_FILE=$etcd_key" "NODENAME=$nodename" "MTU=$mtu" "ASSIGN_IPV6=$ipv6" "LOG_FILE_PATH=$log_file" \
    "AGENT_SOCKET=$conf_socket" "MTU_FILE=$conf_mtu_file") \
    || die "cannot render the network configuration"
put_file "$conf_dir/$conf_name" 0600 <<<"$conflist"

# --- calico-node: its settings, and a systemd unit where systemd runs (else a command to run) ---
node_command="$ctl_dir/calico-node"
unit_changed=0
settings_changed=0  # an earlier environment file changed: calico-node reads it only when it starts
if [ "$node" = true ]; then
    # Private to root: it may hold etcd credentials.
    before=$changes
    [ -f "$env_file" ] || before=-1
    put_file "$env_file" 0600 < <(
        echo "# calico-node's settings, written by scripts/install-cni.sh (run it again to change them;"
        echo "# every variable is described by: $(sh_word "$node_command") --help)"
        printf '%s\n' "${node_env[@]}")
    [ "$before" -lt 0 ] || [ "$changes" -eq "$before" ] || settings_changed=1
    if systemd_runs || [ -n "$unit_dir" ]; then
        unit_path="${unit_dir:-/etc/systemd/system}/$unit_name"
        before=$changes
        put_file "$unit_path" 0644 <<UNIT
[Unit]
Description=calico-node: the node's Calico daemon (plugins' socket, Node resource, BGP routes with BIRD)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=${env_file//%/%%}
ExecStart=$(unit_word "$node_command")
# Only calico-node is signalled on stop or restart: BIRD, which it starts in a session of its own,
# keeps running with the routes, and the next calico-node adopts it.
KillMode=process
# On stop, the plugins' requests in flight finish first (at most their 55 s operation bound).
KillSignal=SIGTERM
TimeoutStopSec=70
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
        [ "$changes" -eq "$before" ] || unit_changed=1
    fi
fi

# Retired files an earlier run installed: the calico-cni-agent launcher and unit (calico-node
# replaced that agent), and with --no-node calico-node's own files. Their units are stopped first
# (never two daemons on one socket), then the files this installation's manifest lists are removed.
# The plugins fall back to in-process work until calico-node answers.
retired_units=("$old_unit")
retired_names=(calico-cni-agent "$old_unit")
if [ "$node" = false ]; then
    retired_units+=("$unit_name")
    retired_names+=(calico-node "$unit_name" "$(basename "$env_file")")
fi
old_agent_stopped=0
if systemd_runs && [ -z "$unit_dir" ]; then
    for unit in "${retired_units[@]}"; do
        if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || die "systemctl disable --now $unit failed"
            note "stopped and disabled $unit"
            old_agent_stopped=1
        fi
    done
fi
if [ -f "$manifest" ]; then
    while read -r path; do
        case "$path" in ''|*/|mask:*) continue ;; esac
        printf '%s\n' "${installed[@]}" | grep -qxF -- "$path" && continue
        for name in "${retired_names[@]}"; do
            [ "$(basename "$path")" = "$name" ] || continue
            if [ -e "$path" ] || [ -L "$path" ]; then
                rm -f "$path"
                case "$name" in calico-cni-agent*) why="calico-node replaces calico-cni-agent" ;; *) why="--no-node" ;; esac
                note "removed $path ($why)"
                case "$path" in *.service) unit_changed=1 ;; esac
            fi
        done
    done < "$manifest"
fi
if [ "$node" = true ] && [ -e "$mask_dir/$old_unit" ]; then
    say "warning: $mask_dir/$old_unit was not installed by this installer; disable it: calico-node serves the plugins' socket now"
fi
if [ "$node" = false ] && [ "$unit_changed" = 1 ] && systemd_runs && [ -z "$unit_dir" ]; then
    systemctl daemon-reload
fi

# Directories an earlier run created stay this installation's while they exist (a run that no
# longer writes into one, --no-node say, must not make --uninstall forget it).
while read -r dir; do
    [ -d "${dir%/}" ] && created_dirs+=("${dir%/}")
done < <(grep '/$' "$manifest" 2>/dev/null || true)
# The manifest itself lives in the prefix, which --uninstall removes as a whole.
before=$changes
put_file "$manifest" 0600 < <(printf '%s\n' "${installed[@]}"
    [ "${#masks[@]}" -eq 0 ] || printf 'mask:%s\n' "${masks[@]}"
    [ "${#created_dirs[@]}" -eq 0 ] || printf '%s/\n' "${created_dirs[@]}" | LC_ALL=C sort -u)
changes=$before

# --- checks: say what the node still needs -------------------------------------------------
sysctl_value() { cat "/proc/sys/${1//.//}" 2>/dev/null || echo "?"; }
[ "$(sysctl_value net.ipv4.ip_forward)" = 1 ] || say "note: IPv4 forwarding is off; pods cannot reach beyond this node. Set: sysctl -w net.ipv4.ip_forward=1"
if [ "$ipv6" = true ] && [ "$(sysctl_value net.ipv6.conf.all.forwarding)" != 1 ]; then
    say "note: IPv6 forwarding is off; pod-to-pod IPv6 through this node needs it. Set: sysctl -w net.ipv6.conf.all.forwarding=1"
fi
uplink=$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
if [ -n "$uplink" ]; then
    uplink_mtu=$(cat "/sys/class/net/$uplink/mtu" 2>/dev/null || echo "")
    if [ -n "$mtu" ] && [ -n "$uplink_mtu" ] && [ "$mtu" -gt "$uplink_mtu" ]; then
        say "note: --mtu $mtu is larger than the MTU of $uplink ($uplink_mtu); pods will see fragmentation or drops"
    fi
else
    say "note: this node has no default route; the plugin takes the pod MTU from --mtu, /var/lib/calico/mtu, or 1500"
fi
"$venv_python" - "$etcd_endpoints" <<'PY' || true
import socket, sys
for url in sys.argv[1].split(","):
    hostport = url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        sys.exit(0)
    except (OSError, ValueError):
        pass
print(f"warning: no etcd endpoint of {sys.argv[1]} answers now; pods cannot start until one does")
PY

if [ "$node" = true ]; then
    # A unit written to another directory (--unit-dir: an image being built, say) is left for
    # whoever boots it to enable.
    if systemd_runs && [ -z "$unit_dir" ]; then
        [ "$unit_changed" = 0 ] || systemctl daemon-reload
        if ! systemctl is-enabled --quiet "$unit_name" 2>/dev/null; then
            systemctl enable --now "$unit_name" >/dev/null 2>&1 || die "systemctl enable --now $unit_name failed; see: journalctl -u $unit_name"
            note "enabled and started $unit_name"
        elif [ "$unit_changed" = 1 ] || [ "$settings_changed" = 1 ] || [ "$package_changed" = 1 ] || [ "$old_agent_stopped" = 1 ] \
                || ! systemctl is-active --quiet "$unit_name"; then
            systemctl restart "$unit_name" || die "systemctl restart $unit_name failed; see: journalctl -u $unit_name"
            note "restarted $unit_name"
        fi
    else
        if [ -n "$unit_dir" ]; then
            say "calico-node: $unit_dir/$unit_name is written, not enabled; to run calico-node now, start it in the node's network namespace with:"
        else
            say "calico-node: systemd does not run here; start calico-node in the node's network namespace with:"
        fi
        node_script=". $(sh_word "$env_file"); exec $(sh_word "$node_command")"
        say "    sh -ac $(sh_word "$node_script") &"
        say "  and check it with: sh -ac $(sh_word "$node_script -felix-ready")  (and -bird-ready)"
        say "  (until it runs, the plugins do all their work in-process, which is slower, and no route reaches other nodes)"
        if [ -S "$run_dir/cni.sock" ]; then
            say "  note: $run_dir/cni.sock exists: stop what serves it first (a calico-cni-agent of an earlier version, or a calico-node to restart)"
        fi
        [ "$package_changed" = 0 ] || say "  a calico-node that is already running runs the previous version until it is restarted"
        [ "$settings_changed" = 0 ] || say "  a calico-node that is already running keeps its previous settings until it is restarted"
    fi
fi

if [ "$changes" -eq 0 ]; then
    say "calico CNI is already installed and up to date; nothing changed"
else
    say "calico CNI installed: plugins in $bin_dir, network config $conf_dir/$conf_name (node $nodename, etcd $etcd_endpoints), calicoctl$([ "$node" = false ] || echo " and calico-node") in $ctl_dir"
fi
