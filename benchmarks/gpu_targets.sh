#!/usr/bin/env bash
# One short GPU lease for the speed targets (issue 4) and the wide sweep (issue 6), with the
# current defaults (batch-1024 recipe, `precision: fast` = fp32 for LeNet-5 on CUDA):
#   1. the CUDA-only tests (whole-step graph, bench's graphed AlexNet step);
#   2. time to 90/91/92 % and per-epoch time/memory over 20 epochs at the recipe's batch;
#   3. `cnnlab bench` (resident and cnnlab loops, batch/size scaling, AlexNet eager + graph);
#   4. `cnnlab sweep` over recipes/space-lenet5-wide.yaml, 30 trials of 30 epochs, then
#      50-epoch runs of the recipe and the 3 best picks, 5 seeds each (--confirm).
# Results go to $OUT (or ./gpu-out). Data: $DATA/fashion-mnist (default .gpu/data).
set -u
. "$(dirname "$0")/gpu_env.sh"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/gpu.txt"
echo "== 1. tests that need CUDA"
timeout 90 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/train/test_graph.py \
  tests/test_bench.py -k "graph" 2>&1 | tail -6 | tee "$OUT/tests.txt"
echo "== 2. time to accuracy at the recipe's batch (20 epochs)"
{ timeout 60 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device cuda --epochs 20 \
    --model recipe --points 1024:1e-2 --out "$OUT/tta-recipe.json" 2>&1 | tail -4
  timeout 60 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device cuda --epochs 20 \
    --model plain --points 1024:8e-3 --out "$OUT/tta-plain.json" 2>&1 | tail -4
} | tee "$OUT/tta.txt"
echo "== 3. cnnlab bench"
timeout 150 $PY -m cnnlab bench --data-dir "$DATA" --device cuda --epochs 5 --loops resident,cnnlab \
  --out "$OUT/bench-gpu.json" 2>&1 | tail -42 | tee "$OUT/bench.txt"
echo "== 4. sweep + confirmation"
R=/tmp/sweep-runs; rm -rf "$R"
timeout ${SWEEP_LIMIT:-330} $PY -m cnnlab sweep --recipe recipes/lenet5-fashion-mnist.yaml \
  --space recipes/space-lenet5-wide.yaml --trials 30 --data-dir "$DATA" --runs-dir "$R" \
  --study lenet5-wide --set train.epochs=30 --prune-after 10 --timeout 170 \
  --confirm 5 --confirm-top 3 2>&1 | tail -48 | tee "$OUT/sweep.txt"
cp "$R"/lenet5-wide/{trials.csv,best.yaml,confirm.json,*.png} "$OUT/" 2>/dev/null
echo "== done"
