#!/usr/bin/env bash
# Follow-up GPU checks (after gpu_targets.sh): the CUDA tests with full failure output,
# precision/layout levers for the recipe's model (ReLU + batch norm) at batch 1024, AlexNet
# with graphed inference through GraphedForward, and 5 seeds of the recipe with residual
# Q/K/V attention. Results to $OUT.
set -u
. "$(dirname "$0")/gpu_env.sh"
echo "== tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/train/test_graph.py \
  tests/test_bench.py -k "graph" --tb=short 2>&1 | tail -40 | tee "$OUT/tests.txt"
echo "== recipe model levers (batch 1024, 12 epochs)"
for lever in "train.precision=fast" "train.precision=bf16" "train.channels_last=false"; do
  echo "-- $lever"
  timeout 45 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device cuda --epochs 12 \
    --model recipe --points 1024:1e-2 --set $lever 2>&1 | tail -1
done | tee "$OUT/levers.txt"
echo "== AlexNet"
timeout 90 $PY -m cnnlab bench --data-dir "$DATA" --device cuda --epochs 1 --loops cnnlab \
  --batch-sizes '' --fractions '' --out "$OUT/alexnet.json" 2>&1 | tail -14 | tee "$OUT/alexnet.txt"
echo "== recipe + residual attention, 50 epochs, seeds 0-4"
for s in 0 1 2 3 4; do
  timeout 40 $PY -m cnnlab train --recipe recipes/lenet5-fashion-mnist.yaml --data-dir "$DATA" \
    --set model.attention=residual --set train.seed=$s --set train.report=false \
    --runs-dir /tmp/att --name att-$s 2>&1 | grep "test accuracy"
done | tee "$OUT/attention.txt"
echo "== done"
