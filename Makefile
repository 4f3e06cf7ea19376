# The two commands of the README.  Both set up what is missing first (scripts/setup.sh).
#   make lab    open JupyterLab on notebooks/00-start-here.ipynb (http://127.0.0.1 only)
#   make test   ruff, then pytest over tests/ and the doctests in mmulib/
# Extra arguments: make lab LAB_ARGS=--no-browser; make test PYTEST_ARGS="-k roles -x".

VENV ?= .venv
LAB_ARGS ?=
PYTEST_ARGS ?=
DOCS_ARGS ?=
# Jupyter refuses to run as root unless told to; CI machines and fresh containers are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab test lint setup setup-test docs

lab:
	bash scripts/setup.sh lab
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 $(ALLOW_ROOT) --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/notebooks/00-start-here.ipynb $(LAB_ARGS)

# ruff and pytest both run; either failing fails the target (pytest's summary comes last).
test: setup-test
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=1; \
	exit $$status

lint: setup-test
	$(VENV)/bin/ruff check .

setup-test:
	bash scripts/setup.sh test

setup:
	bash scripts/setup.sh lab

# The static docs site (site/): every chapter executed, widget state embedded, a Binder link per page.
docs: setup
	$(VENV)/bin/python scripts/build_docs.py $(DOCS_ARGS)
