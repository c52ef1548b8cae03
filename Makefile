# The two commands of the README: `make demo` and `make test`. Both install what they
# need (Debian packages, a venv with the project) and are cheap on a second run.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-unit deps venv bench clean

deps:
	@bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

demo: deps venv
	$(VENV)/bin/weave demo

test: deps venv
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/cluster

bench: deps venv
	$(PY) -m bench.launch

clean:
	rm -rf $(VENV) build *.egg-info
