#!/usr/bin/env bash
# Run here (with pip's registry), not on the GPU machine: downloads into .whl/ the wheels that machine
# lacks for benchmarks/gpu_run.sh (its image has torch, lightning, torchmetrics, onnx, onnxruntime, scipy,
# matplotlib, pandas, seaborn, opencv; see .library/device/KINDS.md): Hydra and its parser runtime,
# faster-coco-eval (torchmetrics' COCO backend), and ultralytics' yolov5 7.0.14 with thop for the
# train.py comparison. That machine runs Python 3.12 on x86-64. About 4 MB in all.
#   bash benchmarks/gpu_wheels.sh     # then name .whl in the device run's carry
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl hydra-core==1.3.2 omegaconf==2.3.0 faster-coco-eval==1.8.0 yolov5==7.0.14 thop
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only:
# built here into a pure-Python wheel, which any platform takes.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
