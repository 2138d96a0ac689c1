# The two commands of README.rst. Both set everything up in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test install browser bytecode
CHROMIUM := /usr/bin/chromium

$(BIN)/simbackend: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[nest,neuron,test]'
	touch $@

install: $(BIN)/simbackend

# The project's own bytecode, as pip compiles an installed package's (an editable install
# is not compiled). Python writes it on first import anyway, unless PYTHONDONTWRITEBYTECODE
# is set, as on some CI machines: then every process compiles the modules it imports
# again (~23 ms of a simulation server's cold start). Only what changed is compiled anew;
# a checkout that cannot be written to runs all the same (hence the leading "-").
bytecode: install
	-$(BIN)/python -m compileall -q backend client lifecycle simserver storage

serve: install bytecode
	$(BIN)/simbackend serve

# The dashboard's tests drive Debian's chromium (Playwright's own browser download cannot
# work here). Installed when missing and we are root (CI); otherwise those tests skip.
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "no $(CHROMIUM) (apt-get install chromium needs root): browser tests will skip"; \
	  fi; \
	fi

# One worker per CPU (pytest-xdist); a test file stays on one worker, so its module
# fixtures (a backend, a browser) and the session's Slurm are started once.
test: install bytecode browser
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -ra -n auto --dist loadfile $(PYTEST_ARGS)
