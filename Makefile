# Two entry points, both work on a fresh machine: `make run` and `make test`.
# Pick the interpreter with PY (Python >= 3.11 with venv): `make PY=python3.12 test`.
PY ?= python3
# `make test`: the test venv (runtime + test extras). Others' tools use .venv/bin/...
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run`: runtime dependencies only, as the container image has them, so a runtime import
# that only the test extras bring in fails here too, not just in production.
RUN_VENV := .venv-run
RUN_STAMP := $(RUN_VENV)/.installed
# What scripts/install-system-deps.sh installs when missing (apt package names).
SYSTEM_PACKAGES := dcmtk prometheus chromium orthanc orthanc-dicomweb

.PHONY: run test test-fast lint system-deps check-python clean helm-template generate

check-python:
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "$(PY) is missing or older than 3.11: install one and pass it, e.g. make PY=python3.12 ..." >&2; \
	  exit 1; }
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "$(PY) cannot create virtualenvs: apt-get install python3-venv (or python3.X-venv)" >&2; \
	  exit 1; }

$(STAMP): pyproject.toml | check-python
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(RUN_STAMP): pyproject.toml | check-python
	$(PY) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install -q --upgrade pip
	$(RUN_VENV)/bin/pip install -q -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(RUN_VENV)/bin/agent run $(ARGS)

system-deps:
	@echo "make test needs the system packages: $(SYSTEM_PACKAGES) (apt-get, as root or via sudo; skipped when present)"
	bash scripts/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/deptry .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(PYTEST_ARGS)

# `make test-fast`: the unit tests only (pytest -m fast: no DCMTK, Prometheus, Chromium, helm,
# subprocess or wheel build, no timing or deadline-waiting test; tests/conftest.py marks them)
# plus ruff. Measured 05:05 UTC on this 2-core machine (load 1.6): 26 s wall, 534 tests (329 left
# to `make test`, which still runs everything).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m fast $(PYTEST_ARGS)

# `make helm-template VALUES="a.yaml b.yaml"`: render the chart offline (no helm binary, no
# cluster) into $(HELM_OUT), then feed the config its ConfigMap carries to
# `agent check-config --config -` (unset ${VAR} secrets get placeholders; certificate files
# exist only in the pod, so their checks are skipped).
HELM_OUT ?= build/helm-template.yaml
helm-template: $(STAMP)
	$(BIN)/python scripts/helm_template.py $(foreach v,$(VALUES),--values $(v)) --out $(HELM_OUT) \
	  --env-out $(HELM_OUT).env > $(HELM_OUT).config.yaml
	env $$(cat $(HELM_OUT).env) $(BIN)/agent check-config --no-file-checks --config - \
	  < $(HELM_OUT).config.yaml

# `make generate`: rewrite every generated file, then commit them. scripts/generate.py lists what
# is generated from what (dashboards/*.json from dashboards/lib; the chart's copies of alerts/ and
# dashboards/ under helm/pacs-health-agent/files) and is where a new generated file is added.
# tests/test_generated_up_to_date.py (fast tier, so in `make test` and `make test-fast`) fails,
# naming the file and this command, while a committed one differs.
generate: $(STAMP)
	$(BIN)/python -m scripts.generate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/deptry .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(RUN_VENV) .pytest_cache
