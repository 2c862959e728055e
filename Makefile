# make dream: environment + weights + a dream from the built-in default input.
# make test:  the test suite (CI runs exactly this).
# make test-quick: the suite without the tests marked slow, for the inner loop.
# make gpu-check GPU_CHECK_OUT=DIR: the prepared GPU check (README: GPU check).
# make gallery: the README gallery (docs/gallery/make.sh).
# make strip-notebooks: outputs and execution counts out of notebooks/*.ipynb.
# make dream PYTHON=/path/to/python3.12 VENV=.venv-py312: another interpreter, its own venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED_WEIGHTS := ../shared/weights/bvlc_googlenet
OFFICIAL_CAFFEMODEL := http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel
OFFICIAL_LABELS := https://chaosmail.github.io/caffejs/data/ilsvrc12/synset_words.txt
# The shared per-layer files when present (this workplace, CI), else the official download.
WEIGHTS_ARGS := $(if $(wildcard $(SHARED_WEIGHTS)/weights),--source=$(SHARED_WEIGHTS),--source=$(OFFICIAL_CAFFEMODEL) --labels=$(OFFICIAL_LABELS))

.PHONY: env weights dream test test-quick bench gpu-check gallery strip-notebooks clean

env: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

weights: weights/manifest.json
weights/manifest.json: | $(VENV)/.installed
	$(PY) scripts/convert_weights.py $(WEIGHTS_ARGS) --out=weights

dream: env weights
	mkdir -p outputs
	$(PY) scripts/dream.py --output=outputs/dream.png

test: env
	$(PY) -m pytest -q tests

test-quick: env
	$(PY) -m pytest -q -m "not slow" tests

# make bench BENCH_ARGS='--sizes=224,512 --batch=1 --mode=step' picks cases.
BENCH_ARGS ?=
bench: env weights
	$(PY) scripts/benchmark.py --out=bench/results $(BENCH_ARGS)

# On the GPU machine's own python3 (jax with CUDA, torch, ...), with weights/ sent
# along: no venv, no install, so it does not depend on `env`.
GPU_CHECK_OUT ?= bench/gpu_check
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=. $(PYTHON) scripts/gpu_check.py --out=$(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# The README gallery (docs/gallery/*.jpg), from the project's own inputs.
gallery: env weights
	PY=$(PY) bash docs/gallery/make.sh

# Notebooks are committed without outputs (tests/test_notebooks.py checks it).
strip-notebooks: env
	$(PY) scripts/strip_notebooks.py

clean:
	rm -rf $(VENV) weights/*.safetensors weights/manifest.json weights/synset_words.txt weights/labels.txt weights/downloads outputs
