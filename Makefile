# The two commands of the README's quick start: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench

$(VENV)/.installed: pyproject.toml contract/pyproject.toml edge/pyproject.toml fleet/pyproject.toml provisioning/pyproject.toml VERSION
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the four parts and the workspace around them, editable (pyproject.toml says which is which)
	$(PY) -m pip install --quiet -e ./contract -e './edge[camera,sensor,speaker]' -e ./fleet -e ./provisioning -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ioc-demo

test: $(VENV)/.installed
	$(PY) -m tests.support.check_services
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=40

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy contract edge fleet provisioning demo

bench: $(VENV)/.installed
	$(PY) benchmarks/ingest_rate.py --postgres
