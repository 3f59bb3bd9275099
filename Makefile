# prizeflow: `make demo` runs the pipeline on the embedded default, `make test` runs the tests.
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
SOURCE  ?=
DEMO_RATINGS ?= 200000

DIST    ?= dist
AIRFLOW_VENV := .venv-airflow

.PHONY: install demo test test-fast test-deploy dist airflow bench clean ui serve s3-server

install: $(VENV)/.installed

# An existing venv is updated in place, never re-created: `python3 -m venv` over it with another
# interpreter on the PATH would point it at that interpreter's standard library.
$(VENV)/.installed: setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $@

# Generates a corpus unless SOURCE=path/to/corpus is given, then runs the whole pipeline on the
# embedded default (ingest into ./lake, train, register in ./mlflow.db) and prints a report.
demo: install
	@if [ -z "$(SOURCE)" ] && [ ! -d demo/corpus ]; then \
	  $(BIN)/prizeflow generate --out demo/corpus --ratings $(DEMO_RATINGS) --seed 7 \
	    --layout combined_data | tail -n 1; \
	fi
	@mkdir -p demo
	$(BIN)/prizeflow run --source $(or $(SOURCE),demo/corpus) | tee demo/run.log
	@echo
	@$(BIN)/python -m prizeflow.report demo/run.log --tracking-uri sqlite:///mlflow.db

# The demo's MLflow store in the browser, and the champion behind HTTP (POST /invocations).
# MLflow's server runs `uvicorn` by name: the venv's bin goes on PATH here, not in your shell.
TRACKING_URI ?= sqlite:///mlflow.db
UI_PORT      ?= 5000
SERVE_PORT   ?= 5001

ui: install
	$(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port $(UI_PORT)

# Serves a copy of the registered version whose files were checked against the digest `register`
# recorded (MODEL is NAME@ALIAS or NAME/VERSION); a changed model is refused, naming the version.
MODEL        ?= prizeflow-als@champion
serve: install
	@copy=$$(mktemp -d) && trap 'rm -rf "$$copy"' EXIT && \
	  model=$$(MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/python -m prizeflow.model_integrity \
	    $(MODEL) "$$copy") && \
	  PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$(TRACKING_URI) \
	  $(BIN)/mlflow models serve -m "$$model" --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

# The default suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of
# them, so its module fixtures (a trained model, a lake) are built once. Each worker has its
# own Spark session (local[2]). On this 2-core machine two workers took 9 min 52 s against
# 14 min 02 s in one process (README "Two commands").
TEST_WORKERS ?= 2
IN_WORKERS   := -n $(TEST_WORKERS) --dist loadfile
test: install
	$(BIN)/pytest $(IN_WORKERS)

test-fast: install
	$(BIN)/pytest $(IN_WORKERS) -m "not spark and not deploy"

# spark-submit on a standalone cluster, Spark Connect, an S3 server, the notebooks, and the
# Airflow DAG (its own venv).
test-deploy: install airflow s3-server
	$(BIN)/pytest -m deploy

# A real S3 server for the object-storage test: versitygw, built from the Go module proxy
# (about 4 minutes the first time, seconds once Go's caches hold it).
S3_SERVER := .tools/bin/versitygw
s3-server: $(S3_SERVER)

$(S3_SERVER):
	GOBIN=$(abspath .tools/bin) go install github.com/versity/versitygw/cmd/versitygw@v1.8.0

# What a cluster needs: the wheel (pip install on the nodes, or a Databricks library), the same
# archive as a .zip for spark-submit --py-files, the thin job files, and the conf profiles.
dist: install
	rm -rf $(DIST) build
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(DIST) .
	cp $(DIST)/prizeflow-*-py3-none-any.whl $(DIST)/prizeflow-$$($(BIN)/python -c 'import prizeflow; print(prizeflow.__version__)').zip
	mkdir -p $(DIST)/jobs $(DIST)/conf $(DIST)/lib/prizeflow
	cp jobs/*.py $(DIST)/jobs/
	cp conf/*.yaml $(DIST)/conf/
	cp lib/prizeflow/steps.py $(DIST)/lib/prizeflow/  # the Airflow DAG reads the step table
	@ls -1 $(DIST) $(DIST)/jobs

# Airflow in its own venv, pinned (dags/requirements-airflow.txt + dags/airflow-constraints.txt).
airflow: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: dags/requirements-airflow.txt dags/airflow-constraints.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet -c dags/airflow-constraints.txt -r dags/requirements-airflow.txt
	touch $@

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_train.py quality
	$(BIN)/python bench/bench_train.py speed
	$(BIN)/python bench/bench_train.py iterations

clean:
	rm -rf lake demo dist build airflow-home mlflow.db mlflow.db.register.lock mlartifacts spark-warehouse .pytest_cache
