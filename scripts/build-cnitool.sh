#!/bin/bash
# Build cnitool (the CNI project's reference command-line client) from Debian's own packages.
#
# Debian 12 does not ship cnitool as a binary, but its source is in the source package
# golang-github-appc-cni (cnitool/cnitool.go), and it imports only libcni, which Debian ships as
# golang-github-appc-cni-dev. So it builds offline in GOPATH mode with Debian's Go toolchain; no
# module download happens.
#
# Usage (as root): scripts/build-cnitool.sh [DEST]      DEST defaults to /usr/local/bin/cnitool
#
# What it changes on the machine:
#   - installs golang-go, golang-github-appc-cni-dev and dpkg-dev with apt-get when missing;
#   - when apt has no deb-src entry for golang-github-appc-cni, adds one for <codename> main in
#     /etc/apt/sources.list.d/calico-cni-deb-src.sources (deb822 format; existing sources untouched)
#     and refreshes only that source's index;
#   - installs the binary at DEST.
# The source and build tree live in a temporary directory that is removed on exit.
# Idempotent: if DEST is already an executable file, it says so and exits at once.
set -euo pipefail

DEST="${1:-/usr/local/bin/cnitool}"
PACKAGES=(golang-go golang-github-appc-cni-dev dpkg-dev)
SRC_PACKAGE=golang-github-appc-cni
SRC_LIST=/etc/apt/sources.list.d/calico-cni-deb-src.sources

say() { echo "build-cnitool: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -x "$DEST" ] && [ -f "$DEST" ]; then
    say "cnitool already installed at $DEST; nothing to do"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and may add an apt source)"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian"

export DEBIAN_FRONTEND=noninteractive

# 1. Build dependencies.
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        say "apt-get install failed; refreshing the package index and retrying"
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# 2. A deb-src entry, only if apt cannot already find the source package.
codename=""
if [ -r /etc/os-release ]; then
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
fi
codename="${codename:-bookworm}"

# The archive URI the machine already uses for Debian's main archive (a mirror or a snapshot may be
# configured), from deb822 .sources files or one-line .list files; deb.debian.org otherwise.
debian_uri() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri="$(awk -v c="$codename" '
            BEGIN { RS=""; FS="\n" }
            {
                types=""; uris=""; suites="";
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/)  types=$i;
                    if ($i ~ /^URIs:/)   uris=$i;
                    if ($i ~ /^Suites:/) suites=$i;
                }
                if (types ~ /(^|[ \t:])deb([ \t]|$)/ && suites ~ ("[ \t:]" c "([ \t]|$)")) {
                    sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")"
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri="$(awk -v c="$codename" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == c) { print $i; exit } }' "$f")"
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    echo "http://deb.debian.org/debian"
}

if ! apt-cache showsrc "$SRC_PACKAGE" >/dev/null 2>&1; then
    if [ ! -e "$SRC_LIST" ]; then
        uri="$(debian_uri)"
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        say "adding deb-src $uri $codename main in $SRC_LIST"
        {
            echo "# Added by calico-cni scripts/build-cnitool.sh (source of cnitool)."
            echo "Types: deb-src"
            echo "URIs: $uri"
            echo "Suites: $codename"
            echo "Components: main"
            if [ -r "$keyring" ]; then echo "Signed-By: $keyring"; fi
        } >"$SRC_LIST"
    fi
    say "refreshing the index of $SRC_LIST"
    # Only this source: the other lists are left as they are.
    apt-get update -o Dir::Etc::sourcelist="$SRC_LIST" -o Dir::Etc::sourceparts=- \
        -o APT::Get::List-Cleanup=0 >/dev/null
    apt-cache showsrc "$SRC_PACKAGE" >/dev/null 2>&1 \
        || die "apt still cannot find the source package $SRC_PACKAGE (see $SRC_LIST)"
fi

# 3. Fetch and unpack the source, build cnitool in GOPATH mode against Debian's libcni.
work="$(mktemp -d /tmp/build-cnitool.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# apt downloads as the _apt user when it can write the directory (otherwise it warns).
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi

say "fetching the source of $SRC_PACKAGE"
(cd "$work" && apt-get source -q "$SRC_PACKAGE" >"$work/apt-source.log" 2>&1) || {
    cat "$work/apt-source.log" >&2
    die "apt-get source $SRC_PACKAGE failed"
}
src="$(find "$work" -mindepth 3 -maxdepth 3 -path '*/cnitool/cnitool.go' | head -n 1)"
[ -n "$src" ] || die "cnitool/cnitool.go not found in the source of $SRC_PACKAGE"

mkdir -p "$work/build/cnitool"
cp "$src" "$work/build/cnitool/"
say "building $(basename "$(dirname "$(dirname "$src")")")/cnitool with $(/usr/bin/go version)"
(
    cd "$work/build/cnitool"
    GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
        GOCACHE="$work/gocache" CGO_ENABLED=0 \
        /usr/bin/go build -o "$work/cnitool" .
)
# With no arguments cnitool prints its usage and exits 1.
usage="$("$work/cnitool" 2>&1 || true)"
case "$usage" in *cnitool*) ;; *) die "the built cnitool does not run: $usage" ;; esac

install -D -m 0755 "$work/cnitool" "$DEST"
say "installed $DEST"
