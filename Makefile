# Everything builds on demand: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARITY_VENV := .venv-parity
PARITY_PY := $(PARITY_VENV)/bin/python
# OpenVINO + NNCF live in their own venv: heavy, and the main suite must not depend on them.
OPENVINO_VENV := .venv-openvino
OPENVINO_PY := $(OPENVINO_VENV)/bin/python
# Pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-fast test-openvino parity-venv openvino-venv venv bench bench-engines clean

venv: $(VENV)/.installed
parity-venv: $(PARITY_VENV)/.installed
openvino-venv: $(OPENVINO_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(PARITY_VENV)/.installed: tests/parity/requirements.txt
	test -x $(PARITY_PY) || $(PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_PY) -m pip install -q $(TORCH_PIN)
	$(PARITY_PY) -m pip install -q -r tests/parity/requirements.txt
	touch $@

$(OPENVINO_VENV)/.installed: pyproject.toml
	test -x $(OPENVINO_PY) || $(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_PY) -m pip install -q $(TORCH_PIN)
	$(OPENVINO_PY) -m pip install -q -e '.[test,openvino]'
	touch $@

demo: venv
	$(PY) -m segnext_hub.tasks.demo

# The whole suite, parity with MMSegmentation 1.2.2 included (it must not be skipped), then
# the OpenVINO tests in their own venv (they skip, with the reason, in the main one).
test: venv parity-venv openvino-venv
	SEGNEXT_REQUIRE_PARITY=1 SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) $(PY) -m pytest -q --durations=15
	$(MAKE) test-openvino

# Only the tests marked `openvino`, in .venv-openvino; a missing OpenVINO fails them there.
test-openvino: openvino-venv
	SEGNEXT_REQUIRE_OPENVINO=1 $(OPENVINO_PY) -m pytest -q -m openvino --durations=10

# Everything but the MMSeg comparisons.
test-fast: venv
	$(PY) -m pytest -q -m "not parity" --durations=15

bench: venv parity-venv
	SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) $(PY) benchmarks/bench_model.py

# exact, fused, onnxruntime, OpenVINO fp32/int8 (and MMSeg when its venv exists), one table.
bench-engines: openvino-venv
	SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) $(OPENVINO_PY) benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) $(PARITY_VENV) $(OPENVINO_VENV) *.egg-info
