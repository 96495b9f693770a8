#!/usr/bin/env bash
# Prove on an x86 Debian machine, without a Docker engine, that the edge runtime installs on
# arm64 (Raspberry Pi 4/5, 64-bit OS) and gives the x86 answers there.
#
# For each Debian release (bookworm/Python 3.11, trixie/Python 3.13: Raspberry Pi OS's two
# bases) it builds a minimal arm64 root with debootstrap, installs the project into it the way
# Dockerfile.arm does (the project wheel with the `camera` extra: pyproject.toml is the one
# dependency list), runs `edge-classify` under qemu-user emulating a Pi's CPU, and has
# scripts/arm64_compare.py compare top-1 and scores with the x86 run and print a table.
#
# Needs: a Debian host (apt-get, dpkg), root (debootstrap's first stage), the project's
# .venv (make .venv/.installed) and ../shared/data/thirdparty. No binfmt_misc, no chroot: qemu's
# -L serves the root's files to the emulated programs. Everything downloaded or built is cached
# in $XDG_CACHE_HOME/retrain-edge/arm64 (default ~/.cache/...), so a rerun takes a few minutes.
#
# usage: scripts/arm64_check.sh [--distro bookworm|trixie]... [--cpu cortex-a72|cortex-a76]
#                               [--model FILE_OR_DIR]... [--thirdparty-model NAME]...
#   --distro            default: both, bookworm first
#   --model             this project's converted models (a .tflite file, or a folder of them,
#                       e.g. float32 and int8 from retrain-edge convert); labels travel with them
#   --thirdparty-model  a file in ../shared/data/thirdparty (default: mobilenet_v1_0.25_128_quant
#                       and mobilenet_v2_1.0_224_quant)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${ARM64_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retrain-edge/arm64}
VENV_PYTHON=${PYTHON:-$REPO/.venv/bin/python}
THIRDPARTY=${THIRDPARTY_DIR:-$REPO/../shared/data/thirdparty}
# The smallest hosted classifier is quick under emulation; v2 at 224 px adds a modern backbone.
THIRDPARTY_MODELS_DEFAULT=(mobilenet_v1_0.25_128_quant.tflite mobilenet_v2_1.0_224_quant.tflite)
IMAGES=(grace_hopper.bmp cat.bmp sunflower.bmp)
# What the device gets: Dockerfile.arm installs the same, `pip install '.[camera]'`.
DEVICE_EXTRA=camera
# Raspberry Pi 4 is a Cortex-A72, Pi 5 a Cortex-A76. Not qemu's default `max` CPU: it gives
# wrong results for dynamic-range models (another top-1). Under Debian 12's qemu 7.2,
# cortex-a76 also moves a dynamic-range model's scores by up to 0.03 (same top-1), which a real
# Pi 5 has not confirmed: the A72 is the reference here.
CPU=cortex-a72
DISTROS=()
OUR_MODELS=()
THIRDPARTY_MODELS=()

usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --distro) DISTROS+=("${2:?--distro needs a value}"); shift 2 ;;
        --cpu) CPU=${2:?--cpu needs a value}; shift 2 ;;
        --model) OUR_MODELS+=("${2:?--model needs a value}"); shift 2 ;;
        --thirdparty-model) THIRDPARTY_MODELS+=("${2:?--thirdparty-model needs a value}"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[ ${#DISTROS[@]} -gt 0 ] || DISTROS=(bookworm trixie)
[ ${#THIRDPARTY_MODELS[@]} -gt 0 ] || THIRDPARTY_MODELS=("${THIRDPARTY_MODELS_DEFAULT[@]}")
for distro in "${DISTROS[@]}"; do
    case $distro in bookworm|trixie) ;; *) die "--distro must be bookworm or trixie, not $distro" ;; esac
done
case $CPU in cortex-a72|cortex-a76) ;; *) die "--cpu must be cortex-a72 (Pi 4) or cortex-a76 (Pi 5), not $CPU" ;; esac

# cpuinfo_lines: what /proc/cpuinfo says on the Pi with that CPU (shared with pi_cost.sh).
source "$REPO/scripts/arm64_cpuinfo.sh"

[ "$(uname -m)" = x86_64 ] || die "this check emulates arm64 on an x86_64 host; on arm64 run edge-classify directly"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs a Debian-based host (apt-get, dpkg)"
[ "$(id -u)" = 0 ] || die "needs root: debootstrap unpacks files owned by root"
command -v wget >/dev/null || die "debootstrap needs wget: apt-get install wget"
[ -x "$VENV_PYTHON" ] || die "no project environment at $VENV_PYTHON: run make .venv/.installed first"
[ -d "$THIRDPARTY" ] || die "no third-party models at $THIRDPARTY (../shared/data/thirdparty)"
mkdir -p "$CACHE"
started=$SECONDS

# --- qemu-user-static and debootstrap, unpacked, not installed -------------------------------
TOOLS=$CACHE/tools
if [ ! -f "$TOOLS/.complete" ]; then
    say "fetching qemu-user-static and debootstrap with apt-get download"
    rm -rf "$TOOLS" "$CACHE/debs" && mkdir -p "$CACHE/debs"
    (cd "$CACHE/debs" && { apt-get download qemu-user-static debootstrap 2>/dev/null ||
        { apt-get update -qq && apt-get download qemu-user-static debootstrap; }; })
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$TOOLS.partial"; done
    mv "$TOOLS.partial" "$TOOLS" && rm -rf "$CACHE/debs" && touch "$TOOLS/.complete"
fi
QEMU=$TOOLS/usr/bin/qemu-aarch64-static
# The Debian mirror this host's apt uses, so the check names no host of its own.
MIRROR=$(cd "$CACHE" && apt-get download --print-uris debootstrap | sed -n "s|^'\(.*\)/pool/.*|\1|p" | head -n 1)
[ -n "$MIRROR" ] || die "cannot tell this host's Debian mirror from apt-get download --print-uris"

# --- one arm64 root per release ---------------------------------------------------------------
build_root() {  # distro -> $CACHE/roots/<distro> with python3
    local distro=$1 root=$CACHE/roots/$1
    [ -f "$root/.complete" ] && return
    say "building the $distro arm64 root (debootstrap --foreign, minbase + python3)"
    rm -rf "$root.partial" && mkdir -p "$CACHE/roots"
    DEBOOTSTRAP_DIR=$TOOLS/usr/share/debootstrap "$TOOLS/usr/sbin/debootstrap" --foreign --arch=arm64 \
        --variant=minbase --include=python3 "$distro" "$root.partial" "$MIRROR" > "$CACHE/debootstrap-$distro.log" 2>&1 ||
        die "debootstrap failed, see $CACHE/debootstrap-$distro.log"
    # The second stage would run the packages' maintainer scripts inside a chroot, which needs
    # binfmt_misc (a change to the host's kernel); Python runs from the unpacked files alone.
    for deb in "$root.partial"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$root.partial"; done
    rm -f "$root.partial"/var/cache/apt/archives/*.deb
    mv "$root.partial" "$root" && touch "$root/.complete"
}

python_in() {  # root [PYTHONPATH] -> sets EMULATED_PYTHON: the words that run the root's python3
    EMULATED_PYTHON=(env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "PYTHONPATH=${2:-}"
                     "$QEMU" -cpu "$CPU" -L "$1" "$1/usr/bin/python3")
}

# --- the project wheel, built from the working tree -----------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say "building the project wheel"
mkdir -p "$WORK/src"
(cd "$REPO" && git ls-files --cached --others --exclude-standard -z | tar --null --ignore-failed-read -cf - -T - 2>/dev/null) | tar -xf - -C "$WORK/src"
"$VENV_PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" > "$WORK/wheel.log" 2>&1 ||
    { cat "$WORK/wheel.log" >&2; die "could not build the project wheel"; }
WHEEL=$(ls "$WORK"/dist/*.whl)
# The same LiteRT release on both sides, so a difference is the architecture's, not a version's.
LITERT_VERSION=$("$VENV_PYTHON" -c "import importlib.metadata as m; print(m.version('ai-edge-litert'))")
echo "ai-edge-litert==$LITERT_VERSION" > "$WORK/constraints.txt"

install_runtime() {  # distro -> sets SITE_PATH (PYTHONPATH inside the root)
    local distro=$1 root=$CACHE/roots/$1 pyver glibc_minor key deps platforms=()
    python_in "$root"
    pyver=$("${EMULATED_PYTHON[@]}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    glibc_minor=$("${EMULATED_PYTHON[@]}" -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split(".")[1])')
    # Every manylinux tag this root's glibc satisfies: pip's --platform takes each literally, and
    # ai-edge-litert 2.x ships only manylinux_2_27_aarch64 (without it pip falls back to 1.x).
    for ((minor = 17; minor <= glibc_minor; minor++)); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
    platforms+=(--platform manylinux2014_aarch64)
    # The dependencies are reinstalled only when their one source, pyproject.toml, changes.
    key=$(cat "$REPO/pyproject.toml" "$WORK/constraints.txt" <(echo "$DEVICE_EXTRA $pyver ${platforms[*]}") | sha256sum | cut -c1-16)
    deps=/opt/retrain-edge/deps-$key
    if [ ! -d "$root$deps" ]; then
        say "installing the aarch64 wheels for Python $pyver into the $distro root"
        rm -rf "$root"/opt/retrain-edge/deps-* && mkdir -p "$root/opt/retrain-edge"
        "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check --target "$root$deps.partial" \
            --only-binary=:all: --python-version "$pyver" --implementation cp "${platforms[@]}" \
            --cache-dir "$CACHE/pip" --constraint "$WORK/constraints.txt" "$WHEEL[$DEVICE_EXTRA]" 2>&1 |
            grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true
        [ -d "$root$deps.partial/ai_edge_litert" ] || die "pip installed no ai-edge-litert for Python $pyver on aarch64"
        mv "$root$deps.partial" "$root$deps"
    fi
    # The project itself changes every edit: reinstalled each run, ahead of the cached copy.
    rm -rf "$root/opt/retrain-edge/app"
    "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --target "$root/opt/retrain-edge/app" "$WHEEL"
    cpuinfo_lines "$CPU" > "$root/proc/cpuinfo"
    SITE_PATH=/opt/retrain-edge/app:$deps
    PY_VERSION=$pyver
}

ARM_RUNS=()
for distro in "${DISTROS[@]}"; do
    build_root "$distro"
    install_runtime "$distro"
    # The console script pip wrote for edge-classify, run by the root's own Python.
    python_in "$CACHE/roots/$distro" "$SITE_PATH"
    printf -v command '%q ' "${EMULATED_PYTHON[@]}" /opt/retrain-edge/app/bin/edge-classify
    ARM_RUNS+=(--arm "$distro/py$PY_VERSION" "$command")
done
say "arm64 roots and runtime ready after $((SECONDS - started)) s"

CASES=()
for name in "${THIRDPARTY_MODELS[@]}"; do
    CASES+=(--model "$THIRDPARTY/$name" "$THIRDPARTY/imagenet_labels.txt")
done
for path in "${OUR_MODELS[@]}"; do
    if [ -d "$path" ]; then
        found=("$path"/*.tflite)
        [ -e "${found[0]}" ] || die "no .tflite file in $path"
    else
        [ -f "$path" ] || die "no model at $path"
        found=("$path")
    fi
    # Labels travel inside our models (or sit beside them), as on the device.
    for model in "${found[@]}"; do CASES+=(--model "$(realpath "$model")"); done
done
[ ${#OUR_MODELS[@]} -gt 0 ] || CASES+=(--skip-ours "no converted model given: pass --model retrain_output/ (a folder of .tflite files from retrain-edge convert) or --model FILE.tflite")

status=0
"$VENV_PYTHON" "$REPO/scripts/arm64_compare.py" --x86 "$(dirname "$VENV_PYTHON")/edge-classify" \
    "${ARM_RUNS[@]}" --cpu "$CPU" "${CASES[@]}" --images "${IMAGES[@]/#/$THIRDPARTY/}" || status=$?
say "arm64 check took $((SECONDS - started)) s"
exit $status
