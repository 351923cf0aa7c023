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
# Pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-fast test-timm parity-venv timm-venv venv bench docs clean

venv: $(VENV)/.installed
parity-venv: $(PARITY_VENV)/.installed
timm-venv: $(TIMM_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test,docs]'
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

demo: venv
	$(PY) -m segnext_hub.tasks.demo

# The docs site (mkdocs-material + mkdocstrings, the `docs` extra, in the main venv) into site/.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The whole suite, parity with MMSegmentation 1.2.2 included (it must not be skipped), the docs
# site's strict build included (SEGNEXT_REQUIRE_DOCS: it must not be skipped either), then
# the timm / segmentation_models_pytorch tests in their own venv (they must not be skipped there).
test: venv parity-venv timm-venv
	SEGNEXT_REQUIRE_DOCS=1 SEGNEXT_REQUIRE_PARITY=1 SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) $(PY) -m pytest -q --durations=15
	$(MAKE) test-timm

test-timm: timm-venv
	SEGNEXT_REQUIRE_TIMM=1 $(TIMM_PY) -m pytest -q -p no:cacheprovider tests/timm

# Everything but the MMSeg comparisons.
test-fast: venv
	SEGNEXT_REQUIRE_DOCS=1 $(PY) -m pytest -q -m "not parity" --durations=15

bench: venv parity-venv
	SEGNEXT_PARITY_PYTHON=$(CURDIR)/$(PARITY_PY) $(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) $(PARITY_VENV) $(TIMM_VENV) *.egg-info site
