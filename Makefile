# One-command setup and test. `make test` and `make demo` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# On a CPU with AVX-512 the tests marked `numerics` run a second time on the AVX2 kernel path, so both
# kernel paths are covered whichever CPU runs the suite (auto | always | never).
AVX2_KERNELS ?= auto

.PHONY: install test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)
	$(PY) -m regionvit_video.utils.machine --avx2-kernels $(AVX2_KERNELS) -- $(PY) -m pytest -q -m numerics $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m regionvit_video.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_attention_memory.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_rand_augment.py

clean:
	rm -rf $(VENV) output demo_output .pytest_cache
