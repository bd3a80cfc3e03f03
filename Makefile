# Two commands do all the set-up: `make run` starts the app, `make test` runs the tests.
# Both create and use .venv/ at the repo root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench clean browser-deps ray

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# Optional extra: Ray Data for `python -m core index --ray` (tests skip the Ray test without it).
ray: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-ray.txt

run: $(STAMP)
	$(BIN)/python app.py $(ARGS)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests" >&2; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "could not install chromium: browser tests will be skipped" >&2; }
	@test -f tests/_artifacts/node/node_modules/axe-core/axe.min.js || { \
	  echo "installing axe-core (npm) for the accessibility test" >&2; \
	  mkdir -p tests/_artifacts/node && npm install --no-save --silent --prefix tests/_artifacts/node axe-core@4 || \
	  echo "could not install axe-core: the accessibility test will be skipped" >&2; }

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m core bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
