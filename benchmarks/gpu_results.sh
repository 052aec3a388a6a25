#!/usr/bin/env bash
# The figures that need a GPU, in one lease of at most 10 minutes:
#   alexnet-cifar10 (CIFAR-10 under --data-dir, python batches or class folders; skipped
#   with one line when absent), alexnet-fashion-mnist-224, `cnnlab bench` and its AlexNet
#   throughput comparison, then the LeNet-5 Fashion-MNIST recipe's time to accuracy
#   (epoch time, seconds to 93 %). Result files go to benchmarks/results/<date>-<machine>/;
#   render the page afterwards with `python benchmarks/render_results.py`.
# Usage: benchmarks/gpu_results.sh [--data-dir DIR] [--out DIR]
# GPU_RESULTS_TINY=1 runs every part in seconds on a CPU (a smoke test; nothing rendered).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
# budgets in seconds: the two recipes, the bench, the time to accuracy (10 minutes in all)
if [[ -n "${GPU_RESULTS_TINY:-}" && "${GPU_RESULTS_TINY}" != 0 ]]; then T=(300 300 300 300); else T=(200 120 150 120); fi
rc=0
for i in 0 1 2 3; do
  part=(cifar fmnist224 bench tta)
  timeout "${T[$i]}" "$PY" benchmarks/gpu_results.py --parts "${part[$i]}" "$@" || {
    echo "gpu_results: part ${part[$i]} failed or ran out of its ${T[$i]} s (exit $?)"; rc=1; }
done
exit $rc
