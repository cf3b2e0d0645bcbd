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

.PHONY: install models demo test lint clean bench-bentoml-venv checkov-venv image-requirements

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

test: install checkov-venv
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services training scripts bench monitoring

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

# checkov, which tests/test_checkov.py runs on the Kubernetes manifests and the
# Dockerfiles, pins versions of packages that .venv also has (packaging and
# networkx among them), so it gets a virtualenv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION ?= 3.3.30

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install "checkov==$(CHECKOV_VERSION)"
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

# The pinned requirements that the Docker images install, taken from the
# versions installed in .venv, which the tests ran against.
image-requirements: install
	$(BIN)/python -m scripts.image_requirements write docker/requirements

clean:
	rm -rf $(VENV) $(BENTOML_VENV) $(CHECKOV_VENV) runs .pytest_cache .mypy_cache .ruff_cache
