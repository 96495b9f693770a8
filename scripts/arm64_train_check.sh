#!/usr/bin/env bash
# `make arm64-train-check`: train and convert on arm64 (a Pi 5, an arm64 Linux laptop) for real,
# under emulation, and check the model classifies as the one trained the same way on x86.
#
# In the bookworm arm64 root that scripts/arm64_check.sh builds (run `make arm64-check` first),
# the `train` extra is installed from its aarch64 wheels (scripts/pip_as.py: pip resolving as on
# linux aarch64, so the markers pick `tensorflow`). Then `retrain-edge train` on a small generated
# dataset with a small MobileNet (random weights drawn from a fixed seed) and `convert --quantize`
# run twice: on this x86 host and under qemu-aarch64. scripts/arm64_train_compare.py classifies
# the images with both int8 models and checks the labels and scores agree.
#
# The roots are shared and left as they are: this check's wheels go to their own directory,
# $CACHE/train, which the emulated Python reads through qemu's -L fallback to host paths.
# Emulated wall time is the cost of this check, never a measure of a Pi's speed.
#
# usage: scripts/arm64_train_check.sh [--cpu cortex-a72|cortex-a76] [--steps N]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${ARM64_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retrain-edge/arm64}
VENV_PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DISTRO=bookworm  # Raspberry Pi OS's base with Python 3.11, the host venv's Python too
CPU=cortex-a76   # a Pi 5: the Pi that trains on itself
# The smallest backbone in the registry at its smallest size: the check is about the platform.
ARCHITECTURE=mobilenet_v1_0.25_128
STEPS=100
IMAGES_PER_CLASS=12

usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --cpu) CPU=${2:?--cpu needs a value}; shift 2 ;;
        --steps) STEPS=${2:?--steps needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case $CPU in cortex-a72|cortex-a76) ;; *) die "--cpu must be cortex-a72 (Pi 4) or cortex-a76 (Pi 5), not $CPU" ;; esac

ROOT=$CACHE/roots/$DISTRO
QEMU=$CACHE/tools/usr/bin/qemu-aarch64-static
[ -x "$VENV_PYTHON" ] || die "no project environment at $VENV_PYTHON: run make .venv/.installed first"
[ -f "$ROOT/.complete" ] && [ -x "$QEMU" ] || die "no $DISTRO arm64 root in $CACHE: run make arm64-check first, it builds it"
OWN=$CACHE/train
mkdir -p "$OWN"
started=$SECONDS

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say "building the project wheel"
"$VENV_PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$REPO" > "$WORK/wheel.log" 2>&1 ||
    { cat "$WORK/wheel.log" >&2; die "could not build the project wheel"; }
WHEEL=$(ls "$WORK"/dist/*.whl)

emulated_python() {  # [PYTHONPATH] -> the words that run the root's python3 under qemu
    emulated=(env -i PATH=/usr/bin:/bin "HOME=$WORK/home" LANG=C.UTF-8 "PYTHONPATH=${1:-}"
              "$QEMU" -cpu "$CPU" -L "$ROOT" "$ROOT/usr/bin/python3")
}
emulated_python
pyver=$("${emulated[@]}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Reinstalled only when their one source, pyproject.toml, changes.
deps=$OWN/deps-$(cat "$REPO/pyproject.toml" <(echo "train $pyver") | sha256sum | cut -c1-16)
if [ ! -d "$deps" ]; then
    say "installing the train extra's aarch64 wheels for Python $pyver into $deps"
    rm -rf "$OWN"/deps-*
    # pip's after-install check looks at the host venv, whose conflicts are not this root's: logged.
    "$VENV_PYTHON" "$REPO/scripts/pip_as.py" linux-aarch64 "$pyver" install --quiet --isolated --target "$deps.partial" \
        --cache-dir "$CACHE/pip" "$WHEEL[train]" > "$WORK/deps.log" 2>&1 || true
    [ -d "$deps.partial/tensorflow" ] || { cat "$WORK/deps.log" >&2; die "pip installed no tensorflow for Python $pyver on aarch64"; }
    mv "$deps.partial" "$deps"
fi
rm -rf "$OWN/app"
"$VENV_PYTHON" -m pip install --quiet --isolated --no-deps --target "$OWN/app" "$WHEEL" > "$WORK/app.log" 2>&1 ||
    { cat "$WORK/app.log" >&2; die "could not install the project into $OWN/app"; }
say "arm64 train environment ready after $((SECONDS - started)) s"

"$VENV_PYTHON" "$REPO/scripts/make_sample_data.py" "$WORK/images" --images_per_class "$IMAGES_PER_CLASS" >/dev/null
train_and_convert() {  # name python-command... -> $WORK/<name>/model_int8.tflite, seconds on stdout
    local name=$1 begin=$SECONDS; shift
    local common=(--image_dir "$WORK/images" --architecture "$ARCHITECTURE" --weights none --seed 0
                  --how_many_training_steps "$STEPS" --bottleneck_dir "$WORK/$name/bottlenecks")
    "$@" -m trainer.cli train "${common[@]}" --output_dir "$WORK/$name/out" > "$WORK/$name.log" 2>&1 &&
    "$@" -m trainer.cli convert --output_dir "$WORK/$name/out" --quantize \
        --output_tflite "$WORK/$name/model_int8.tflite" >> "$WORK/$name.log" 2>&1 ||
        { cat "$WORK/$name.log" >&2; die "train or convert failed on $name"; }
    echo $((SECONDS - begin))
}
mkdir -p "$WORK/home"
say "x86_64: train $ARCHITECTURE ($STEPS steps), convert --quantize"
x86_seconds=$(train_and_convert x86_64 env "HOME=$WORK/home" "$VENV_PYTHON")
say "arm64 under qemu-aarch64 -cpu $CPU: the same"
emulated_python "$OWN/app:$deps"
arm_seconds=$(train_and_convert arm64 "${emulated[@]}")

status=0
"$VENV_PYTHON" "$REPO/scripts/arm64_train_compare.py" --x86 "$(dirname "$VENV_PYTHON")/edge-classify" \
    --reference "$WORK/x86_64/model_int8.tflite" --candidate "$WORK/arm64/model_int8.tflite" \
    --images "$WORK"/images/*/*.jpg || status=$?
say "train + convert --quantize: x86_64 ${x86_seconds} s, arm64 emulated (qemu -cpu $CPU) ${arm_seconds} s; whole check $((SECONDS - started)) s"
exit $status
