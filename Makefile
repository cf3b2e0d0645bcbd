# Two entry points for a fresh machine with Python 3.11:
#   make demo   set up .venv, build the default models, classify and detect through the gateway
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MODELS ?= models

# Nothing we run may reach for the internet: ultralytics resolves public DNS
# names at import and sends usage events unless told otherwise, and
# onnxruntime 1.32 on Linux starts a telemetry uploader unless this is set.
export YOLO_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export ORT_DISABLE_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install models demo test lint clean bench-bentoml-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[train,monitor,dev]"
	$(BIN)/yolo settings sync=False > /dev/null
	touch $@

install: $(VENV)/.installed

# Each builder skips a model that already has a version. The detector trains
# for 4 to 17 minutes on 2 CPU cores the first time, depending on the load.
models: install
	$(BIN)/python -m training.classification.build_defaults --repository $(MODELS)
	$(BIN)/python -m training.detection.build_default --repository $(MODELS)

demo: models
	$(BIN)/python -m scripts.demo --repository $(MODELS)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services training scripts bench

# BentoML for `python -m bench.serving` lives in its own virtualenv, so that
# its dependency pins never touch .venv. It gets the serving extra and no torch.
BENTOML_VENV := bench/.venv-bentoml
BENTOML_VERSION ?= 1.4.40

$(BENTOML_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENTOML_VENV)
	$(BENTOML_VENV)/bin/pip install "bentoml==$(BENTOML_VERSION)" -e ".[serve]"
	@if $(BENTOML_VENV)/bin/pip show torch > /dev/null 2>&1; then \
		echo "torch was installed into $(BENTOML_VENV); it must not be" >&2; exit 1; fi
	touch $@

bench-bentoml-venv: $(BENTOML_VENV)/.installed

clean:
	rm -rf $(VENV) $(BENTOML_VENV) runs .pytest_cache .mypy_cache .ruff_cache
