#!/usr/bin/env bash
# Issue 6's sweep on a GPU: 30 trials of 30 epochs around the default recipe, then the
# best config's full run and the default recipe's full run, same machine (to $OUT).
# Optuna and its needs travel as wheels in .whl/ (see the device notes in BENCHMARKS.md).
set -u
. "$(dirname "$0")/gpu_env.sh"
R=${RUNS:-/tmp/sweep-runs}; rm -rf "$R"
$PY -m cnnlab sweep --recipe recipes/lenet5-fashion-mnist.yaml --space recipes/space-lenet5-bn.yaml \
  --trials ${TRIALS:-30} --data-dir "$DATA" --runs-dir "$R" --study lenet5-fm \
  --set train.epochs=${TRIAL_EPOCHS:-30} --prune-after ${PRUNE_AFTER:-10} \
  --timeout ${SWEEP_TIMEOUT:-200} ${SWEEP_ARGS:-} 2>&1 | tail -45 | tee "$OUT/sweep.txt"
cp "$R/lenet5-fm/trials.csv" "$R/lenet5-fm/best.yaml" "$OUT/" 2>/dev/null
for name in default best; do
  rec=recipes/lenet5-fashion-mnist.yaml; [ $name = best ] && rec=$R/lenet5-fm/best.yaml
  $PY -m cnnlab train --recipe "$rec" --data-dir "$DATA" --runs-dir "$R/full" --name $name \
    ${FULL_ARGS:-} 2>&1 | tail -3
  $PY - "$R/full/$name/metrics.jsonl" $name <<'PY' | tee -a "$OUT/full-runs.txt"
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
t = sum(r.get("seconds", 0) for r in m)
print(f"{sys.argv[2]}: {len(m)} epochs, final test acc {m[-1]['test_acc']:.4f}, "
      f"best {max(r['test_acc'] for r in m):.4f}, training {t:.1f} s")
PY
done
