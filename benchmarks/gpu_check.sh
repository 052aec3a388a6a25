#!/usr/bin/env bash
# Every GPU check and benchmark of cnnlab in one script, for a short lease of a GPU
# machine (its image has PyTorch; cnnlab runs from src/). Results go to $OUT (or ./gpu-out).
# Data: Fashion-MNIST's four .gz files under $DATA/fashion-mnist (default .gpu/data).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
DATA=${DATA:-.gpu/data}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEV=${DEV:-cuda}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/gpu.txt"
echo "== tests that need CUDA"
timeout 150 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/train/test_graph.py \
  tests/train/test_speed.py 2>&1 | tail -12 | tee "$OUT/tests.txt"
echo "== levers: graph mode at the recipe's batch (3 epochs)"
for m in false model step; do
  timeout 100 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device "$DEV" --epochs 3 \
    --model plain --points 128:3e-3 --set train.cuda_graph=$m --out "$OUT/lever-$m.json" 2>&1 | tail -2
done | tee "$OUT/levers.txt"
echo "== time to accuracy, plain LeNet-5 (bench's model) and the recipe's (ReLU+BN)"
{ timeout 150 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device "$DEV" --epochs 20 \
    --model plain --points 128:3e-3,256:4e-3,512:6e-3,1024:8e-3 --out "$OUT/tta-plain.json" 2>&1 | tail -5
  timeout 150 $PY benchmarks/time_to_accuracy.py --data-dir "$DATA" --device "$DEV" --epochs 15 \
    --model recipe --points 128:3e-3,256:4e-3,512:6e-3,1024:8e-3 --out "$OUT/tta-recipe.json" 2>&1 | tail -5
} | tee "$OUT/tta.txt"
echo "== cnnlab bench (naive, resident, cnnlab; batch/size sweeps; AlexNet)"
timeout 330 $PY -m cnnlab bench --data-dir "$DATA" --device "$DEV" --epochs 5 \
  --out "$OUT/bench-gpu.json" ${BENCH_ARGS:-} 2>&1 | tail -40 | tee "$OUT/bench.txt"
echo "== done"
