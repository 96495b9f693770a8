#!/usr/bin/env bash
# Count the aarch64 instructions a Raspberry Pi executes per inference: the real LiteRT and
# XNNPACK kernels, run under qemu-user emulating a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5),
# counted by a small TCG plugin (scripts/pi_cost_plugin.c). A count, not a time: see
# docs/pi-cost.md.
#
# This script builds the counter, then hands over to scripts/pi_cost.py, which counts and prints
# the table. Nothing is installed system-wide; everything is cached in
# $XDG_CACHE_HOME/retrain-edge/arm64/pi-cost (default ~/.cache/...), beside the arm64 roots that
# `make arm64-check` builds and that this reuses (run it once first):
# - Debian 12's dynamically linked qemu-user 7.2 (the static build refuses -plugin) and the two
#   libraries it needs, libcapstone4 and liburing2: `apt-get download` + `dpkg -x`;
# - qemu-plugin.h from Debian's qemu source, fetched with `apt-get source --download-only`
#   through a private apt configuration whose only source is a deb-src line for the mirror
#   this host's apt already uses (the host's apt set-up is not touched);
# - the plugin, compiled with the host's gcc;
# - per CPU, a hard-linked copy of the bookworm root with that CPU's /proc/cpuinfo (the shared
#   root's own cpuinfo belongs to whichever CPU arm64-check last ran; a copy costs no space).
#
# Needs: a Debian 12 host (apt-get, dpkg, gcc), the project's .venv, and the bookworm root
# from `make arm64-check`.
#
# usage: scripts/pi_cost.sh [--build-only] [scripts/pi_cost.py arguments]
#   --build-only   build the counter and stop (trainer.pi_cost can use it from then on)
#   scripts/pi_cost.sh --help-counts shows scripts/pi_cost.py's own arguments.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARM64=${ARM64_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retrain-edge/arm64}
CACHE=$ARM64/pi-cost
VENV_PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DISTRO=bookworm  # the root whose Python (3.11) runs the counted program; Raspberry Pi OS's base
CPUS=(cortex-a72 cortex-a76)
BUILD_ONLY=0

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }
source "$REPO/scripts/arm64_cpuinfo.sh"

case ${1:-} in
    --build-only) BUILD_ONLY=1; shift ;;
    -h|--help) sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --help-counts) exec "$VENV_PYTHON" "$REPO/scripts/pi_cost.py" --help ;;
esac

[ "$(uname -m)" = x86_64 ] || die "the counter emulates arm64 on an x86_64 host"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs a Debian-based host (apt-get, dpkg)"
command -v gcc >/dev/null || die "needs gcc to build the counting plugin: apt-get install gcc"
[ -x "$VENV_PYTHON" ] || die "no project environment at $VENV_PYTHON: run make .venv/.installed first"
ROOT=$ARM64/roots/$DISTRO
[ -f "$ROOT/.complete" ] && compgen -G "$ROOT/opt/retrain-edge/deps-*" >/dev/null ||
    die "no arm64 $DISTRO root with the edge runtime in $ARM64: run \`make arm64-check\` first"
mkdir -p "$CACHE"
started=$SECONDS

# --- qemu-user (dynamic) and its libraries, unpacked, not installed ---------------------------
QEMU_DIR=$CACHE/qemu
if [ ! -f "$QEMU_DIR/.complete" ]; then
    say "pi-cost: fetching qemu-user, libcapstone4 and liburing2 with apt-get download"
    rm -rf "$QEMU_DIR" "$QEMU_DIR.partial" "$CACHE/debs" && mkdir -p "$CACHE/debs"
    (cd "$CACHE/debs" && { apt-get download qemu-user libcapstone4 liburing2 2>/dev/null ||
        { apt-get update -qq && apt-get download qemu-user libcapstone4 liburing2; }; })
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$QEMU_DIR.partial"; done
    dpkg-deb -f "$CACHE"/debs/qemu-user_*.deb Source | sed -n 's/^qemu (\(.*\))$/\1/p' > "$QEMU_DIR.partial/source-version"
    mv "$QEMU_DIR.partial" "$QEMU_DIR" && rm -rf "$CACHE/debs" && touch "$QEMU_DIR/.complete"
fi
QEMU=$QEMU_DIR/usr/bin/qemu-aarch64
QEMU_LIBS=$QEMU_DIR/usr/lib/x86_64-linux-gnu

# --- qemu-plugin.h, from the matching Debian source -----------------------------------------
HEADER_DIR=$CACHE/include
if [ ! -f "$HEADER_DIR/qemu-plugin.h" ]; then
    version=$(cat "$QEMU_DIR/source-version")
    [ -n "$version" ] || die "cannot tell the qemu source version from the qemu-user package"
    mirror=$(cd "$CACHE" && apt-get download --print-uris qemu-user | sed -n "s|^'\(.*\)/pool/.*|\1|p" | head -n 1)
    [ -n "$mirror" ] || die "cannot tell this host's Debian mirror from apt-get download --print-uris"
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
    say "pi-cost: fetching qemu $version's source for qemu-plugin.h (deb-src $mirror $suite main)"
    apt_dir=$CACHE/apt
    rm -rf "$apt_dir" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/source"
    echo "deb-src $mirror $suite main" > "$apt_dir/sources.list"
    cat > "$apt_dir/apt.conf" <<EOF
Dir::Etc::sourcelist "$apt_dir/sources.list";
Dir::Etc::sourceparts "$apt_dir/no-parts";
Dir::State::lists "$apt_dir/lists";
Dir::Cache "$apt_dir";
APT::Sandbox::User "root";
EOF
    APT_CONFIG=$apt_dir/apt.conf apt-get update -qq
    (cd "$apt_dir/source" && APT_CONFIG=$apt_dir/apt.conf apt-get source --download-only -qq "qemu=$version")
    mkdir -p "$HEADER_DIR.partial"
    tar -xJf "$apt_dir"/source/qemu_*.orig.tar.xz -C "$HEADER_DIR.partial" --wildcards --strip-components=3 \
        '*/include/qemu/qemu-plugin.h'
    rm -rf "$HEADER_DIR" && mv "$HEADER_DIR.partial" "$HEADER_DIR" && rm -rf "$apt_dir"
fi

# --- the plugin ------------------------------------------------------------------------------
PLUGIN=$CACHE/pi_cost_plugin.so
if [ ! -f "$PLUGIN" ] || [ "$PLUGIN" -ot "$REPO/scripts/pi_cost_plugin.c" ]; then
    say "pi-cost: compiling the counting plugin"
    gcc -shared -fPIC -O2 -Wall -Wextra -Wno-unused-parameter -I "$HEADER_DIR" \
        -o "$PLUGIN.partial" "$REPO/scripts/pi_cost_plugin.c"
    mv "$PLUGIN.partial" "$PLUGIN"
fi

# --- one root per CPU: hard links to the shared root, and that CPU's /proc/cpuinfo -----------
DEPS=$(cd "$ROOT" && ls -d opt/retrain-edge/deps-* | head -n 1)
for cpu in "${CPUS[@]}"; do
    root=$CACHE/roots/$cpu
    if [ ! -d "$root/$DEPS" ] || [ "$root/.complete" -ot "$ROOT/.complete" ]; then
        say "pi-cost: linking the $DISTRO root for $cpu"
        rm -rf "$root" "$root.partial" && mkdir -p "$CACHE/roots"
        cp -al "$ROOT" "$root.partial"
        # Replaced, never written through: the file is a hard link into the shared root.
        rm -f "$root.partial/proc/cpuinfo"
        cpuinfo_lines "$cpu" > "$root.partial/proc/cpuinfo"
        mv "$root.partial" "$root" && touch "$root/.complete"
    fi
done
# What trainer.pi_cost reads to find the counter.
cat > "$CACHE/counter.json.partial" <<EOF
{"qemu": "$QEMU", "library_path": "$QEMU_LIBS", "plugin": "$PLUGIN", "site_path": "/$DEPS",
 "roots": {$(for cpu in "${CPUS[@]}"; do printf '"%s": "%s", ' "$cpu" "$CACHE/roots/$cpu"; done | sed 's/, $//')}}
EOF
mv "$CACHE/counter.json.partial" "$CACHE/counter.json"
say "pi-cost: counter ready in $CACHE after $((SECONDS - started)) s"
[ $BUILD_ONLY = 1 ] && exit 0

exec nice -n 10 "$VENV_PYTHON" "$REPO/scripts/pi_cost.py" "$@"
