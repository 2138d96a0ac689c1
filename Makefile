# The two commands of README.rst. Both set everything up in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test install

$(BIN)/simbackend: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[nest,neuron,test]'
	touch $@

install: $(BIN)/simbackend

serve: install
	$(BIN)/simbackend serve

test: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)
