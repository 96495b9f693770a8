#!/usr/bin/env bash
# Prove that our converted models travel: the real MediaPipe Tasks ImageClassifier loads each of
# the demo's four converted models (float32, dynamic, float16, int8) and the third-party
# classifiers in ../shared/data/thirdparty (skipped without it), names its categories from the
# standard metadata, and agrees with edge-classify on the same files (scripts/interop_check.py
# prints the table and exits 1 when a model misses a target).
#
# MediaPipe lives in its own venv, $INTEROP_VENV (default ~/.cache/retrain-edge/interop-venv),
# created on first use: it brings opencv-contrib-python, which must not shadow the project's
# OpenCV. Needs the project's .venv and `make demo`'s output (demo_output/model); the four
# models are converted from it into demo_output/interop on first use.
#
# The third-party models classify their own test images (grace_hopper, cat, sunflower); more
# can be given to scripts/interop_check.py with --thirdparty_images.
#
# usage: scripts/interop_check.sh [--demo DIR]   (default: demo_output)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEDIAPIPE_VERSION=1.2.3
INTEROP_VENV=${INTEROP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/retrain-edge/interop-venv}
PROJECT_BIN=${PROJECT_BIN:-$REPO/.venv/bin}
THIRDPARTY=${THIRDPARTY_DIR:-$REPO/../shared/data/thirdparty}
DEMO=$REPO/demo_output
MODES=(float32 dynamic float16 int8)

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --demo) DEMO=${2:?--demo needs a folder}; shift 2 ;;
        -h|--help) sed -n '/^# usage:/p' "$0" | sed 's/^# //'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[ -f "$DEMO/model/run.json" ] || die "no $DEMO/model/run.json: run \`make demo\` first"
[ -x "$PROJECT_BIN/edge-classify" ] || die "no $PROJECT_BIN/edge-classify: run \`make .venv/.installed\` first"

if [ "$("$INTEROP_VENV/bin/python" -c 'import mediapipe; print(mediapipe.__version__)' 2>/dev/null)" != "$MEDIAPIPE_VERSION" ]; then
    say "interop-check: installing mediapipe==$MEDIAPIPE_VERSION into $INTEROP_VENV"
    python3 -m venv "$INTEROP_VENV"
    "$INTEROP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mediapipe==$MEDIAPIPE_VERSION"
fi

MODELS=$DEMO/interop
for mode in "${MODES[@]}"; do
    if [ ! -f "$MODELS/$mode.tflite" ] || [ "$MODELS/$mode.tflite" -ot "$DEMO/model/model.keras" ]; then
        say "interop-check: converting the demo model to $mode"
        "$PROJECT_BIN/retrain-edge" convert --output_dir "$DEMO/model" --quantization "$mode" \
            --output_tflite "$MODELS/$mode.tflite" > /dev/null
    fi
done

THIRDPARTY_ARGS=()
if [ -d "$THIRDPARTY" ]; then
    THIRDPARTY_ARGS=(--thirdparty "$THIRDPARTY")
fi
"$INTEROP_VENV/bin/python" "$REPO/scripts/interop_check.py" --edge_classify "$PROJECT_BIN/edge-classify" \
    --models "$MODELS" --images "$DEMO/images" "${THIRDPARTY_ARGS[@]}"
