# Two commands set everything up on a fresh machine with python3 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VENDORED := taskflow_vendor/taskflow.py
TEMPLATE_COPY := {{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}/taskflow.py
DEMO_DIR := build/demo

.PHONY: test lint demo bench sync check-sync clean

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Browser tests run in their own pytest process: Playwright's sync API keeps an event
# loop on the main thread, which the asyncio tests that would follow cannot share.
test: $(STAMP) check-sync
	$(PY) -m pytest -m "not browser"
	$(PY) -m pytest -m browser

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check taskflow_vendor tests hooks scripts local_extensions.py

# The template ships the vendored module byte for byte; `make sync` refreshes its copy.
sync:
	cp $(VENDORED) "$(TEMPLATE_COPY)"

check-sync:
	@cmp -s $(VENDORED) "$(TEMPLATE_COPY)" || { \
	  echo "The template's taskflow.py differs from $(VENDORED): run 'make sync'." >&2; exit 1; }

# Bake the default project, install it, serve it on 127.0.0.1:8000 and feed it tasks.
demo: $(STAMP) check-sync
	rm -rf $(DEMO_DIR)
	$(PY) -m cookiecutter --no-input --output-dir $(DEMO_DIR) . > /dev/null
	$(PY) -m pip install --quiet $(DEMO_DIR)/*/
	$(PY) scripts/demo.py $(DEMO_DIR)

bench: $(STAMP)
	$(PY) -m pip install -q -r bench/requirements.txt && $(PY) bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
