#!/usr/bin/env bash
# Install the calico and calico-ipam CNI plugins and calicoctl on this node (run as root).
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
  --nodename NAME         [NODENAME]            the host name, lower-cased
  --mtu N                 [CNI_MTU]             decided by the plugin (see README)
  --ipv6                  [CALICO_IPV6=true]    also assign IPv6 addresses
  --log-file PATH         [CALICO_LOG_FILE]     /var/log/calico/cni/cni.log
  --calicoctl-dir DIR     [CALICOCTL_DIR]       /usr/local/bin
  --python PATH           [PYTHON]              the first Python 3.11+ found (never a pyenv shim)
  --agent-socket PATH     [CALICO_CNI_AGENT_SOCKET] /var/run/calico/cni.sock  the per-node agent's socket
  --no-agent              [CALICO_CNI_AGENT=false] no calico-cni-agent: every plugin run does all
                          its work in-process (slower, see README "Performance")
  --unit-dir DIR          [SYSTEMD_UNIT_DIR]    /etc/systemd/system  where the agent's unit goes; it is
                          written when systemd runs here or this option is given, and started when
                          systemd runs (otherwise the installer prints the command that starts it)
  --uninstall             remove what was installed (listed in PREFIX/installed-files): its files,
                          the virtual environment, and the directories it created, if empty
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
default_socket=/var/run/calico/cni.sock
agent_socket=${CALICO_CNI_AGENT_SOCKET:-$default_socket}
agent=${CALICO_CNI_AGENT:-true}
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
        --agent-socket) agent_socket=$2; shift ;;
        --no-agent) agent=false ;;
        --unit-dir) unit_dir=$2; shift ;;
        --uninstall) uninstall=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-cni.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '%s\n' "$*"; }
die() { printf 'install-cni.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it writes to $bin_dir and $conf_dir"
manifest="$prefix/installed-files"
unit_name=calico-cni-agent.service
systemd_runs() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
case "$agent" in true|false) ;; *) die "CALICO_CNI_AGENT must be true or false, got $agent" ;; esac
case "$agent_socket" in /*) ;; *) die "--agent-socket must be an absolute path, got $agent_socket" ;; esac

# The manifest lists every file installed, then every directory an installation created (with a
# trailing /): --uninstall removes those files, the virtual environment, and those directories when
# they are empty, nothing else.
if [ "$uninstall" = 1 ]; then
    [ -f "$manifest" ] || { say "nothing to uninstall: $manifest does not exist"; exit 0; }
    if grep -q "/$unit_name\$" "$manifest" && systemd_runs; then
        systemctl disable --now "$unit_name" >/dev/null 2>&1 && say "stopped and disabled $unit_name"
    fi
    while read -r path; do
        case "$path" in ''|*/) continue ;; esac
        if [ -e "$path" ] || [ -L "$path" ]; then rm -f "$path" && say "removed $path"; fi
    done < "$manifest"
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
case "$mtu" in ''|[0-9]*) ;; *) die "--mtu must be a number, got $mtu" ;; esac

changes=0
package_changed=0
installed=()
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

# put_launcher DIR NAME: DIR/NAME, an executable that runs the venv's interpreter directly, as
# `python -I -S` with the package's directories on sys.path (calico_cni/launcher.py says why).
# (put_file reads files or process substitutions, not pipes: a pipe would run it in a subshell
# and lose what it records.)
put_launcher() {
    "$venv_python" -I -m calico_cni.launcher "$2" > "$work/launcher" || die "cannot render the $2 launcher"
    put_file "$1/$2" 0755 < "$work/launcher"
}
put_launcher "$bin_dir" calico
put_launcher "$bin_dir" calico-ipam
put_launcher "$ctl_dir" calicoctl
put_launcher "$ctl_dir" calico-cni-agent

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
# The conflist names the agent's socket only when it is not the plugins' default.
conf_socket=""
[ "$agent" = false ] || [ "$agent_socket" = "$default_socket" ] || conf_socket=$agent_socket
conflist=$("$venv_python" "$here/scripts/render-conflist.py" "$here/conf/10-calico.conflist" \
    "ETCD_ENDPOINTS=$etcd_endpoints" "ETCD_CA_CERT_FILE=$etcd_ca" "ETCD_CERT_FILE=$etcd_cert" \
    "ETCD_KEY_FILE=$etcd_key" "NODENAME=$nodename" "MTU=$mtu" "ASSIGN_IPV6=$ipv6" "LOG_FILE_PATH=$log_file" \
    "AGENT_SOCKET=$conf_socket") \
    || die "cannot render the network configuration"
put_file "$conf_dir/$conf_name" 0600 <<<"$conflist"

# --- the per-node agent: a systemd unit where systemd runs, otherwise a command to run ----------
agent_command="$ctl_dir/calico-cni-agent --socket $agent_socket"
unit_changed=0
if [ "$agent" = true ] && { systemd_runs || [ -n "$unit_dir" ]; }; then
    unit_path="${unit_dir:-/etc/systemd/system}/$unit_name"
    before=$changes
    put_file "$unit_path" 0644 <<UNIT
[Unit]
Description=calico-cni-agent: the warm per-node agent of the calico CNI plugins
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$agent_command
# On stop, requests in flight finish first (at most the plugins' 55 s operation bound).
KillSignal=SIGTERM
TimeoutStopSec=70
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
    [ "$changes" -eq "$before" ] || unit_changed=1
fi

# The manifest itself lives in the prefix, which --uninstall removes as a whole.
before=$changes
put_file "$manifest" 0600 < <(printf '%s\n' "${installed[@]}"; [ "${#created_dirs[@]}" -eq 0 ] || printf '%s/\n' "${created_dirs[@]}" | LC_ALL=C sort -u)
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

if [ "$agent" = true ]; then
    # A unit written to another directory (--unit-dir: an image being built, say) is left for
    # whoever boots it to enable.
    if systemd_runs && [ -z "$unit_dir" ]; then
        [ "$unit_changed" = 0 ] || systemctl daemon-reload
        if ! systemctl is-enabled --quiet "$unit_name" 2>/dev/null; then
            systemctl enable --now "$unit_name" >/dev/null 2>&1 || die "systemctl enable --now $unit_name failed; see: journalctl -u $unit_name"
            note "enabled and started $unit_name"
        elif [ "$unit_changed" = 1 ] || [ "$package_changed" = 1 ] || ! systemctl is-active --quiet "$unit_name"; then
            systemctl restart "$unit_name" || die "systemctl restart $unit_name failed; see: journalctl -u $unit_name"
            note "restarted $unit_name"
        fi
    else
        if [ -n "$unit_dir" ]; then
            say "agent: $unit_dir/$unit_name is written, not enabled; to run the agent now, start it in the node's network namespace with:"
        else
            say "agent: systemd does not run here; start the agent in the node's network namespace with:"
        fi
        say "    $agent_command &"
        say "  and check it with: $ctl_dir/calico-cni-agent health --socket $agent_socket"
        say "  (until it runs, the plugins do all their work in-process, which is slower)"
        [ "$package_changed" = 0 ] || say "  an agent that is already running serves the previous version until it is restarted"
    fi
fi

if [ "$changes" -eq 0 ]; then
    say "calico CNI is already installed and up to date; nothing changed"
else
    say "calico CNI installed: plugins in $bin_dir, network config $conf_dir/$conf_name (node $nodename, etcd $etcd_endpoints), calicoctl in $ctl_dir"
fi
