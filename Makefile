# The two commands of the README: `make demo` and `make test`. Both install what they
# need (Debian packages, a venv with the project, the Scope page's npm packages from
# their lockfile and its bundle) and are cheap on a second run.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
WEB    := services/scope/app/web
WEB_SRC := $(wildcard $(WEB)/src/*) $(WEB)/index.html $(WEB)/build.mjs

.PHONY: demo test test-unit deps venv web bench clean

deps:
	@bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed
	@$(PY) -m compileall -q -j0 -o 0 -o 2 shared services weavectl >/dev/null
	@$(PY) -m compileall -q -j0 bench tests >/dev/null
	@PYTHONDONTWRITEBYTECODE= $(PY) -OO -m weavectl.preload >/dev/null

# (compileall: the project's bytecode is written once here, so that every process of a
# stack imports from .pyc even where PYTHONDONTWRITEBYTECODE is set: compiling the
# modules a fork server preloads costs 0.17 s of CPU per launch. Only changed files are
# recompiled on a second run. The stack runs `python -OO` (weavectl/stack_files.py
# STACK_PYTHON_FLAGS), the CLI and the tests plain `python`, so the project gets both.
# `-OO -m weavectl.preload` imports what the supervisor can preload with bytecode
# writing on: the .opt-2.pyc of every library and stdlib module among them (as root,
# the stdlib's too), and the cache of the methods @dataclass generates: 0.1 s of every
# launch's CPU, see weavectl/compiled_once.py.)

# The Scope page: npm ci installs exactly the lockfile's packages (no network at run
# time: the bundle is served by the app), esbuild bundles them with our sources.
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json $(WEB)/package.json
	@cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error

$(WEB)/dist/app.js: $(WEB)/node_modules/.package-lock.json $(WEB_SRC)
	@cd $(WEB) && node build.mjs

web: $(WEB)/dist/app.js

demo: deps venv web
	$(VENV)/bin/weave demo

test: deps venv web
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/cluster

bench: deps venv
	$(PY) -m bench.launch

clean:
	rm -rf $(VENV) build *.egg-info $(WEB)/node_modules $(WEB)/dist
