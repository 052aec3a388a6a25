# Sourced by the GPU scripts: $OUT, $DATA, $PY, and a PYTHONPATH holding src/ and (from the
# .whl/ wheels, when the machine's image lacks it) Optuna.
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"; DATA=${DATA:-.gpu/data}; PY=${PY:-python3}
if [ -d .whl ] && ! $PY -c "import optuna" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
