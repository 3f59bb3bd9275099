# prizeflow: `make demo` runs the pipeline on the embedded default, `make test` runs the tests.
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
SOURCE  ?=
DEMO_RATINGS ?= 200000

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
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

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not integration"

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_train.py quality
	$(BIN)/python bench/bench_train.py speed
	$(BIN)/python bench/bench_train.py iterations

clean:
	rm -rf lake demo mlflow.db mlartifacts spark-warehouse .pytest_cache
