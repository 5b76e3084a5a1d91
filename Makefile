# The project's front door: `make run` starts the whole system locally, `make test` runs the suite.
# Both create .venv and install what they need.

# Python 3.12 (the Lambda runtime): pyenv's if there, else whatever python3.12 / python3 is on PATH.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) $(shell command -v python3.12 2>/dev/null) python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
API_PORT ?= 8000
AWS_PORT ?= 5000

.PHONY: run stop key test test-fast lint admin venv clean bench

$(STAMP): requirements.txt requirements-dev.txt edge_agent/requirements.txt
	@echo "== Installing what the project needs into $(VENV) (first run, or a requirements file changed):"
	@echo "   the packages pinned in requirements-dev.txt (the Lambda's, the edge agent's, chalice, moto, pytest...),"
	@echo "   about 150 MB from PyPI, a minute or so. pip shows each package below."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	@echo "== Installed: $(VENV) is ready."
	touch $(STAMP)

venv: $(STAMP)

# tests/system/test_docs_page.py drives Debian's chromium. `make test` installs it when it is missing, with
# apt-get: as root (CI), else through sudo (installing Debian packages is all make test needs root for).
# Without apt-get, or when the install fails, it says what to do and runs the suite anyway (that one test
# then fails saying chromium is missing).
CHROMIUM_INSTALL = command -v chromium >/dev/null 2>&1 || { \
	if command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "== Installing Debian's chromium for tests/system/test_docs_page.py: $$SUDO apt-get install chromium"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi; \
	command -v chromium >/dev/null 2>&1 || echo "== chromium is missing and could not be installed here (no apt-get, or no root): \
install Debian's or your system's chromium package yourself (a 'chromium' on PATH), or leave the browser test out with \
'make test-fast' or '$(PY) -m pytest -m \"not browser\"'. make test goes on: tests/system/test_docs_page.py will fail."; }

# The suite in parallel (pytest-xdist): a worker per core (CI: 2); each test file runs whole on one worker
# (its module's moto and stacks are built once), in the order collected (the slow files first).
# WORKERS=1 (or 0: no workers at all) runs it in one process.
WORKERS ?= auto
XDIST = -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# The gate (pyproject.toml): ruff, then mypy, over the whole tree. `$(VENV)/bin/ruff check --fix .` fixes most of ruff's findings.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Every test: tests/unit, tests/api, tests/edge, tests/system (the slow and browser ones included); the
# 20 slowest tests are listed at the end (where the suite's time goes).
test: $(STAMP) lint
	@$(CHROMIUM_INSTALL)
	$(PY) -m pytest -q $(XDIST) --durations=20

# Between commits: everything but the slow whole-system tests and the browser (about a third of the time).
test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow and not browser"

# make run [FRESH=1]: the state of earlier runs (.local/stack-PORT/) is kept unless FRESH=1.
# Stop it with Ctrl-C, SIGTERM (kill -TERM <pid of make or of the stack>), or closing its terminal;
# it prints how long the stop took. Its processes end with it however it ends.
run: $(STAMP)
	API_PORT=$(API_PORT) AWS_PORT=$(AWS_PORT) FRESH=$(FRESH) exec $(PY) -m tools.stack run

# make stop [API_PORT=…]: end the make run of this checkout on that port from another terminal, or the
# processes one left running (the pids it recorded in .local/stack-PORT/stack.json, nothing else).
stop: $(STAMP)
	@API_PORT=$(API_PORT) $(PY) -m tools.stack stop

# The demo account's API key, from the running stack: export KEY=$$(make -s key)
key: $(STAMP)
	@API_PORT=$(API_PORT) $(PY) -m tools.stack key

admin: $(STAMP)
	AWS_PORT=$(AWS_PORT) $(PY) -m tools.admin $(ARGS)

bench: $(STAMP)
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

# ---- Deployment (docs/deploy.md) ---------------------------------------------------------------
# make package [STAGE=dev]: build/STAGE/{deployment.zip,sam.yaml}, checked (infra/package.py).
# make deploy STAGE=dev ARTIFACTS_BUCKET=my-bucket [STACK=…] [AWS_REGION=…] [ALARM_EMAIL=…]: package, upload, deploy.
# make check: the packages of every deployed stage build, are complete and pass cfn-lint.
STAGE ?= dev
STACK ?= intellimeter-$(STAGE)
AWS ?= aws
ARTIFACTS_BUCKET ?=
AWS_REGION ?=
DEPLOY_STAGES := dev prod

.PHONY: package deploy check

package: $(STAMP)
	$(PY) infra/package.py --stage $(STAGE) --out build/$(STAGE)

ifneq ($(filter deploy,$(MAKECMDGOALS)),)
ifeq ($(ARTIFACTS_BUCKET),)
$(error make deploy: set ARTIFACTS_BUCKET to the S3 bucket for the code: make deploy STAGE=$(STAGE) ARTIFACTS_BUCKET=my-bucket)
endif
ifeq ($(filter $(STAGE),$(DEPLOY_STAGES)),)
$(error make deploy: STAGE must be one of $(DEPLOY_STAGES), not "$(STAGE)")
endif
endif

deploy: package
	$(AWS) cloudformation package $(if $(AWS_REGION),--region $(AWS_REGION)) --template-file build/$(STAGE)/sam.yaml --s3-bucket $(ARTIFACTS_BUCKET) --s3-prefix $(STACK) --output-template-file build/$(STAGE)/packaged.yaml
	$(AWS) cloudformation deploy $(if $(AWS_REGION),--region $(AWS_REGION)) --template-file build/$(STAGE)/packaged.yaml --stack-name $(STACK) --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset $(if $(ALARM_EMAIL),--parameter-overrides AlarmEmail=$(ALARM_EMAIL))
	$(AWS) cloudformation describe-stacks $(if $(AWS_REGION),--region $(AWS_REGION)) --stack-name $(STACK) --query "Stacks[0].Outputs" --output table

check: $(STAMP)
	for stage in $(DEPLOY_STAGES); do $(PY) infra/package.py --stage $$stage --out build/$$stage || exit 1; done

# The schemathesis run of tests/api/test_fuzz.py with more examples per operation than `make test` gives it
# (FUZZ_EXAMPLES=6 there); e.g. `make fuzz FUZZ_EXAMPLES=500` for a longer one.
.PHONY: fuzz
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),100) $(PY) -m pytest -q tests/api/test_fuzz.py
