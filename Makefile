# The two commands: `make dev` starts the embedded stack, `make test` runs the tests.
# Both create the Python environment in .venv first (again whenever pyproject.toml changes).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: dev test local-setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

dev: $(STAMP)
	$(VENV)/bin/hpcinfra dev

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

# As root, once per machine: what the `local` provider needs (slurm-wlm, munge, munged running).
local-setup: $(STAMP)
	$(VENV)/bin/hpcinfra local setup

clean:
	rm -rf $(VENV) data .pytest_cache
