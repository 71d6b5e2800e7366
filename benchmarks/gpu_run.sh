#!/usr/bin/env bash
# The GPU checks (issue 14) as one command for the device machine: under 9.5 minutes on one H200, each
# step under its own timeout (140 + 190 + 200 + 40 s), so run it with timeout_s=600:
#   1. benchmarks/gpu_check.py: the +prune=sparse flow on CUDA with 16-mixed, and the CLI path;
#   2. benchmarks/train_vs_ultralytics.py: images/s of `python -m yolo_slim train` against their train.py;
#   3. benchmarks/gpu_latency.py: fp16 latency of dense and pruned, eager / CUDA graph / torch.compile;
#   4. benchmarks/loader_cost.py: CPU per training sample there, ours against theirs (what feeds the GPU).
# Prepare here: bash benchmarks/gpu_wheels.sh; then run it there from the repo root, carrying .whl:
#   bash benchmarks/gpu_run.sh        (logs in $OUT, or in ./gpu-logs without it)
# A dry run on a CPU machine with the project installed: GPU_RUN_DRY=1 bash benchmarks/gpu_run.sh
# (tiny sizes, no wheels installed, their train.py from $THEIRS_PYTHON).
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${OUT:-$PWD/gpu-logs}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
if [ -z "${GPU_RUN_DRY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$logs/nvidia-smi.log"
    python3 -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning',
lightning.__version__, 'torchmetrics', torchmetrics.__version__, 'cuda', torch.version.cuda)" | tee -a "$logs/nvidia-smi.log"
    check=() ; speed=() ; latency=() ; loader=() ; theirs=python3
else
    export PYTHONPATH=$PWD:$PWD/benchmarks
    check=(--model yolov5n --imgsz 96 --epochs 4 --prune-epoch 2 --batch-size 8 --workers 0 --num-train 48
           --latency-imgsz 96
           --cli-override=data.synthetic.num_train=32 --cli-override=data.synthetic.num_val=8
           --cli-override=data.synthetic.image_size=96 --cli-override=data.imgsz=96)
    speed=(--model yolov5n --imgsz 96 --batch-size 8 --epochs 2 --workers 1 --num-train 32 --num-val 8)
    latency=(--model yolov5n --imgsz 96 --batch-sizes 1 2 --ratios 0.5 --roundings 8 --runs 3 --dtype fp32
             --compile-budget-s 30)
    loader=(--imgsz 96 --num-train 32 --batches 2)
    theirs=${THEIRS_PYTHON:-/tmp/refenv/bin/python}
fi
timeout 140 python3 benchmarks/gpu_check.py "${check[@]}" 2>&1 | tee "$logs/gpu_check.log"
timeout 190 python3 benchmarks/train_vs_ultralytics.py --num-train 2048 "${speed[@]}" --theirs-python "$theirs" \
    --logs "$logs" 2>&1 | tee "$logs/train_vs_ultralytics.log"
timeout 200 python3 benchmarks/gpu_latency.py --compile-budget-s 140 "${latency[@]}" 2>&1 | tee "$logs/gpu_latency.log"
stubs=$(python3 benchmarks/ultralytics_stubs.py /tmp/ultralytics-stubs)
PYTHONPATH=$stubs:$PYTHONPATH timeout 40 "$theirs" benchmarks/loader_cost.py "${loader[@]}" 2>&1 | grep -v "Caching\|Scanning" \
    | tee "$logs/loader_cost.log"
