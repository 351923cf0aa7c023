# Everything builds on demand: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARITY_VENV := .venv-parity
PARITY_PY := $(PARITY_VENV)/bin/python
# timm + segmentation_models_pytorch need torchvision, which needs its own torch (see
# tests/timm/requirements.txt): a third venv, built on demand by `make test`.
TIMM_VENV := .venv-timm
TIMM_PY := $(TIMM_VENV)/bin/python
PADDLE_VENV := .venv-paddle
PADDLE_PY := $(PADDLE_VENV)/bin/python
# OpenVINO + NNCF live in their own venv: heavy, and the main suite must not depend on them.
OPENVINO_VENV := .venv-openvino
OPENVINO_PY := $(OPENVINO_VENV)/bin/python
# Pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-fast test-timm test-openvino parity-venv paddle-venv timm-venv openvino-venv venv bench bench-engines clean

venv: $(VENV)/.installed
parity-venv: $(PARITY_VENV)/.installed
paddle-venv: $(PADDLE_VENV)/.installed
timm-venv: $(TIMM_VENV)/.installed
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

$(TIMM_VENV)/.installed: tests/timm/requirements.txt pyproject.toml
	test -x $(TIMM_PY) || $(PYTHON) -m venv $(TIMM_VENV)
	$(TIMM_PY) -m pip install -q -r tests/timm/requirements.txt
	$(TIMM_PY) -m pip install -q -c tests/timm/requirements.txt -e '.[test,timm]'
	touch $@

# PaddleSeg 2.8.0 for the paddle parity tests (no torch needed there).
$(PADDLE_VENV)/.installed: tests/parity/paddle-requirements.txt
	test -x $(PADDLE_PY) || $(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_PY) -m pip install -q -r tests/parity/paddle-requirements.txt
	$(PADDLE_PY) -m pip install -q --no-deps paddleseg==2.8.0
	touch $@

$(OPENVINO_VENV)/.installed: pyproject.toml
	test -x $(OPENVINO_PY) || $(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_PY) -m pip install -q $(TORCH_PIN)
	$(OPENVINO_PY) -m pip install -q -e '.[test,openvino]'
	touch $@

demo: venv
	$(PY) -m segnext_hub.tasks.demo

# The whole suite, parity with MMSegmentation 1.2.2 and PaddleSeg 2.8.0 included (they must not
# be skipped), then the timm / segmentation_models_pytorch and OpenVINO tests in their own venvs
# (they skip, with the reason, in the main one).
test: venv parity-venv paddle-venv timm-venv openvino-venv
	SEGNEXT_REQUIRE_PARITY=1 SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) SEGNEXT_PADDLE_PYTHON=$(CURDIR)/$(PADDLE_PY) $(PY) -m pytest -q --durations=15
	$(MAKE) test-timm
	$(MAKE) test-openvino

test-timm: timm-venv
	SEGNEXT_REQUIRE_TIMM=1 $(TIMM_PY) -m pytest -q -p no:cacheprovider tests/timm

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
	rm -rf $(VENV) $(PARITY_VENV) $(PADDLE_VENV) $(TIMM_VENV) $(OPENVINO_VENV) *.egg-info
