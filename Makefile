# The project's front door: `make run` starts the whole system locally, `make test` runs the suite.
# Both create .venv and install what they need.

# Python 3.12 (the Lambda runtime): pyenv's if there, else whatever python3.12 / python3 is on PATH.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) $(shell command -v python3.12 2>/dev/null) python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
API_PORT ?= 8000
AWS_PORT ?= 5000

.PHONY: run test admin venv clean bench

$(STAMP): requirements.txt requirements-dev.txt edge_agent/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

run: $(STAMP)
	API_PORT=$(API_PORT) AWS_PORT=$(AWS_PORT) exec $(PY) -m tools.stack run

admin: $(STAMP)
	AWS_PORT=$(AWS_PORT) $(PY) -m tools.admin $(ARGS)

bench: $(STAMP)
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache
