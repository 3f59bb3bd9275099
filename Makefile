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

# Generates a corpus unless SOURCE=path/to/corpus is given, then ingests it into ./lake.
demo: install
	@if [ -z "$(SOURCE)" ] && [ ! -d demo/corpus ]; then \
	  $(BIN)/prizeflow generate --out demo/corpus --ratings $(DEMO_RATINGS) --seed 7 \
	    --layout combined_data | tail -n 1; \
	fi
	$(BIN)/prizeflow ingest --source $(or $(SOURCE),demo/corpus)

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not integration"

bench: install
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf lake demo mlflow.db spark-warehouse .pytest_cache
