#!/usr/bin/env bash
# One device session: ResNet-50 per image at 224 px with the Triton elementwise kernels
# on and off, for tf32 and fp16 (4 cascade rows in one process, same image and model),
# written as JSON. Run from the repo root on the GPU machine (carry .whl, as for gpu_run.sh):
#   ADJINV_COMMIT=<commit> bash benchmarks/triton_gpu.sh    # writes $OUT/speed_cuda_r50_triton.json, $OUT/triton.log
# Before trusting the times, the script checks the kernels against the PyTorch path on the
# GPU (the same tests as on the CPU, compiled instead of interpreted) and stops if they fail.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/adjinv-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src
LOG="$OUT/triton.log"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  echo "code: ${ADJINV_COMMIT:-unknown (set ADJINV_COMMIT=<commit>)}"; } 2>&1 | tee -a "$LOG"
# 1. correctness on the GPU: compiled kernels against the PyTorch reference
python3 benchmarks/triton_check.py 2>&1 | tee -a "$LOG" || { echo "kernel check failed: no timing" | tee -a "$LOG"; exit 1; }
# 2. timing: kernels torch/triton x precision tf32/fp16, one image, error against float32
python3 benchmarks/speed.py --device cuda --size 224 --encoders resnet50 --batch 1 \
  --methods cascade --precision tf32 fp16 --kernels torch triton --ref-channels 64 \
  --repeats 3 --warmup 1 --out "$OUT/speed_cuda_r50_triton.json" --markdown /tmp/adjinv-md-triton.md \
  2>&1 | grep -v Warning | tee -a "$LOG"
