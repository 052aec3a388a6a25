# cnnlab — `make run` (set-up + the main job) and `make test` (set-up + the test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: run test test-slow lint docs bench bench-serve install clean

# The venv is (re)built when pyproject.toml changes. torch/torchvision are named
# explicitly so pip takes the builds that sit on this machine's disk.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install -q torch torchvision
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cnnlab train

# The suite without the `slow` tests (minutes); `make test-slow` runs the slow ones (the
# kill-and-resume campaigns, the wheel, the docs site, the notebooks, the README tour).
# CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

test-slow: $(DOCS_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

# lint-imports: the floors of pyproject's [tool.importlinter] (imports point down, no cycles)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

# The documentation site (docs/ + mkdocs.yml) into site/; --strict: a broken link fails.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

# Time to accuracy of what users run (the shipped Fashion-MNIST recipe and the defaults, as
# whole `cnnlab train` processes) against the naive and resident reference loops, on real
# Fashion-MNIST from $CNNLAB_DATA (or cnnlab's usual places); one table, one result file
# under benchmarks/results/. BENCH_ARGS adds flags, e.g. a quick version:
#   make bench BENCH_ARGS="--epochs 8 --ref-epochs 4 --targets fashion-mnist"
BENCH_DATA ?= $(CNNLAB_DATA)
BENCH_OUT  ?= benchmarks/results/$(shell date +%F)-cpu$(shell nproc)/bench-tta.json
bench: $(STAMP)
	$(BIN)/cnnlab bench $(if $(BENCH_DATA),--data-dir $(BENCH_DATA)) --out $(BENCH_OUT) $(BENCH_ARGS)
	$(BIN)/python benchmarks/render_results.py

# Load test of `cnnlab serve` with hey (apt-get install hey): torch/ONNX × adaptive batching
# on/off at 1, 8, 32, 64 clients; SERVE_RUN: a trained run (a tiny synthetic one is trained
# when it does not exist). Writes benchmarks/results/<date>-<machine>/serve-load.json.
SERVE_RUN ?= runs/lenet5-fashion-mnist
SERVE_OUT ?= benchmarks/results/$(shell date +%F)-cpu$(shell nproc)/serve-load.json
bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve_load.py --run $(SERVE_RUN) --seconds 5 --out $(SERVE_OUT)

clean:
	rm -rf $(VENV) runs build src/*.egg-info
