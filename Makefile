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

.PHONY: install test test-full demo bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# `make test` (CI) leaves out the tests marked `slow` (full-size ONNX exports, the GPU check's CPU run, torch.compile,
# 2000 decodes); `make test-full` runs them too.
TEST_MARKS ?= not slow
test: $(STAMP)
	$(PY) -m pytest -q -m "$(TEST_MARKS)" $(PYTEST_ARGS)
	$(PY) -m regionvit_video.utils.machine --avx2-kernels $(AVX2_KERNELS) -- $(PY) -m pytest -q -m "numerics and $(TEST_MARKS)" $(PYTEST_ARGS)

test-full:
	$(MAKE) test TEST_MARKS="slow or not slow"

demo: $(STAMP)
	$(PY) -m regionvit_video.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_attention_memory.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_rand_augment.py

# The GPU check (benchmarks/gpu_check.py): runs with the machine's own Python and torch, this checkout on
# PYTHONPATH and no install (a GPU machine may have no internet). Its data sections need wheels carried
# along: make gpu-check GPU_CHECK_ARGS="--wheels wheels/" (see the script's docstring).
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) output demo_output .pytest_cache gpu_check_output
