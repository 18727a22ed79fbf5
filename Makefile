# One command to install (on first use), one to run, one to test.
#   make pipeline                                   run the default pipeline (MNIST DCGAN):
#                                                   prepare, tune, train, evaluate, register
#   make pipeline PIPELINE=pipelines/gaussian_1d.toml ARGS="--set profile=quick"
#   make train                                      the train stage alone (no search)
#   make test                                       every test (what CI runs), TEST_WORKERS at once
#   make test-fast                                  the unit tests, a few minutes
#   make faults                                     fault scenarios against the real CLI
#   make bench                                      training-step benchmark vs the tutorial loops
#   make classifier                                 retrain the MNIST evaluation classifier that
#                                                   ships in gan_pipeline/evaluation/shipped/
#   make ui                                         MLflow UI on http://127.0.0.1:5000
#   make server                                     MLflow tracking server on http://127.0.0.1:5000
#                                                   (HOST=, PORT=; AUTH=1 for a login: docs/scale.md)
#   make serve MODEL=models:/mnist_dcgan@champion   serve a generator: POST z to
#                                                   http://127.0.0.1:5001/invocations

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
PIPELINE ?= pipelines/mnist_dcgan.toml
ARGS     ?=
HOST     ?= 127.0.0.1
PORT     ?= 5000
SERVE_PORT ?= 5001
MODEL    ?=
AUTH     ?=
# Test processes side by side (pytest-xdist): on 2 cores one process keeps ~1.1 of them busy, as
# the tests wait on subprocesses, servers and files; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
BIN      := $(VENV)/bin

# MLflow's usage telemetry (on by default since MLflow 3.2) stays off: these machines are often
# offline, where it has been reported to hang. `make ... MLFLOW_DISABLE_TELEMETRY=false` turns it on.
MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_DISABLE_TELEMETRY

# Use the prepared datasets next to the checkout when present (offline machines), unless the
# caller already chose a TFDS_DATA_DIR.
SHARED_TFDS := $(abspath ../shared/data/tfds)
ifeq ($(origin TFDS_DATA_DIR),undefined)
ifneq ($(wildcard $(SHARED_TFDS)),)
export TFDS_DATA_DIR := $(SHARED_TFDS)
endif
endif

.PHONY: install pipeline train test test-fast faults bench classifier ui server serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,auth]'
	@touch $@

pipeline: install
	$(BIN)/gan-pipeline run $(PIPELINE) $(ARGS)

train: install
	$(BIN)/gan-pipeline train --config $(PIPELINE) $(ARGS)

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=10 tests $(ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=5 -m "not slow and not process and not integration" tests $(ARGS)

bench: install
	$(BIN)/python bench/bench.py $(ARGS)

classifier: install
	$(BIN)/python scripts/train_classifier.py $(ARGS)

faults: install
	$(BIN)/python scripts/faults.py

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(HOST) --port $(PORT)

# The repo's SQLite store and artifact folder behind a tracking server: clients set
# MLFLOW_TRACKING_URI=http://HOST:PORT and send artifacts through it. Plain, it has no login: keep
# it on 127.0.0.1. AUTH=1 puts MLflow's basic auth in front: the admin comes from
# MLFLOW_AUTH_ADMIN_USERNAME (default admin) / MLFLOW_AUTH_ADMIN_PASSWORD, clients log in with
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (docs/scale.md).
server: install
	$(BIN)/gan-pipeline server --store . --host $(HOST) --port $(PORT) $(if $(filter 1,$(AUTH)),--auth)

# Any model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/generator), looked up
# in $MLFLOW_TRACKING_URI (default: the repo's mlflow.db), served in this project's environment
# (its bin/ first on PATH: MLflow starts the server as `uvicorn`, found there).
serve: install
	@test -n "$(MODEL)" || { echo "gan-pipeline: error: make serve needs MODEL=<model URI>, e.g. MODEL=models:/mnist_dcgan@champion" >&2; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
		$(BIN)/mlflow models serve \
		-m "$(MODEL)" --env-manager local --host $(HOST) --port $(SERVE_PORT)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
