#!/usr/bin/env bash
# Install what the project needs on a Debian/Ubuntu machine (run as root), idempotently:
# system packages and a virtual environment in .venv with the project and its test tools.
#   scripts/setup-deps.sh            # runtime needs (etcd, BIRD 2, CNI reference plugins, iproute2, nftables, ...)
#   scripts/setup-deps.sh --demo     # plus cnitool, which the demo starts pods with
#   scripts/setup-deps.sh --test     # plus what the test suite needs (podman, cnitool, ...)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
want_test=0
want_cnitool=0
case "${1:-}" in
    --test) want_test=1; want_cnitool=1 ;;
    --demo) want_cnitool=1 ;;
esac

say() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deps.sh: run as root (it installs Debian packages and creates network namespaces)" >&2
    exit 1
fi

# No conntrack: calico-node deletes a removed pod's conntrack entries over netlink itself; the
# tests create and list entries with Debian's `conntrack`, which --test installs (test-deps.txt).
packages=(etcd-server etcd-client containernetworking-plugins iproute2 iputils-ping busybox-static
          python3 python3-venv ca-certificates bird2 nftables)
if [ "$want_test" = 1 ] && [ -f "$here/scripts/test-deps.txt" ]; then
    while read -r pkg _; do
        case "$pkg" in ''|'#'*) continue ;; esac
        packages+=("$pkg")
    done < "$here/scripts/test-deps.txt"
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts etcd and BIRD as services where systemd runs; the project starts its own etcd
# instances, and calico-node its own BIRD (scripts/install-cni.sh also masks bird.service on a node:
# its kernel protocol deletes every "proto bird" route it did not install).
for service in etcd bird; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
done

# A real interpreter (never a pyenv shim: it costs ~95 ms per plugin exec), Python >= 3.11.
python=""
for candidate in /usr/bin/python3 /usr/local/bin/python3 python3.13 python3.12 python3.11; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    real=$("$path" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null) || continue
    case "$real" in ''|*/shims/*) continue ;; esac
    python=$real
    break
done
if [ -z "$python" ]; then
    echo "setup-deps.sh: Python 3.11 or newer is needed" >&2
    exit 1
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $python"
    "$python" -m venv "$venv"
fi
extras=""
[ "$want_test" = 1 ] && extras="[test]"
stamp="$venv/.installed$extras"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
    say "installing the project into $venv"
    log="$venv/pip-install.log"
    if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$here$extras"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "setup-deps.sh: pip install failed; the full log is $log" >&2
        exit 1
    fi
    touch "$stamp"
fi

if [ "$want_cnitool" = 1 ]; then
    "$here/scripts/build-cnitool.sh" /usr/local/bin/cnitool >&2
fi
