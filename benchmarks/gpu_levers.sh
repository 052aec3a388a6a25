#!/usr/bin/env bash
# Second GPU pass: precision × memory format × augmentation at two batch sizes, and the
# recipe's LR at large batches (results to $OUT). Same setup as gpu_check.sh.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"; DATA=${DATA:-.gpu/data}; DEV=${DEV:-cuda}; PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
echo "== levers (plain LeNet-5, 3 epochs; median of epochs)"
timeout 150 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device "$DEV" --epochs 3 \
  --model plain --points 128:3e-3,1024:8e-3 --out "$OUT/levers2.json" --variants \
  "train.precision=bf16;train.precision=fp32;train.channels_last=false;train.precision=fp32 train.channels_last=false;data.augment=none" \
  2>&1 | grep -v Warning | tail -12 | tee "$OUT/levers2.txt"
echo "== recipe (ReLU+BN) at large batches, 20 epochs"
timeout 150 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device "$DEV" --epochs 20 \
  --model recipe --points 1024:5e-3,1024:1.2e-2,2048:1.2e-2 --out "$OUT/tta2.json" 2>&1 \
  | tail -4 | tee "$OUT/tta2.txt"
