# Two commands for a fresh machine: `make demo` (the main job on the embedded sample)
# and `make test` (the whole test suite). Each sets itself up: Debian packages, a
# virtual environment in .venv, the toolkit and its dependencies.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the demo, tests and benchmarks need: WordNet 3.0, Java for pyspark, GNU time,
# SLURM and munge (the sbatch tests run a real single-node cluster), docker-compose (validates the stack),
# Chromium and its driver (wit view's tests drive a real headless browser).
DEBIAN_PACKAGES := wordnet-base openjdk-17-jre-headless time slurm-wlm munge docker-compose chromium chromium-driver
DEMO := demo
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test test-quick bench system-packages clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || $(MAKE) --no-print-directory system-packages PACKAGES=python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps 'clip-benchmark==1.6.2'   # only its class names and templates (see README)
	touch $@

PACKAGES ?= $(DEBIAN_PACKAGES)
system-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The main job on the embedded sample, end to end, in English, Japanese and Chinese: query
# lists from the real Wikipedia excerpt of the gensim wheel and WordNet and from generated
# ja/zh dumps, merged into a worldwide list; a demo web crawled from its WAT file (language
# ID, per-language matching and balancing), shards, a tokenizer trained on them, a small
# CLIP trained for a few minutes, zero-shot and retrieval per language (pipelines/demo.py).
demo: $(BIN)/.installed
	@$(MAKE) --no-print-directory system-packages PACKAGES=wordnet-base || echo "WordNet not installed: building the query list without it"
	$(BIN)/python pipelines/demo.py --out $(DEMO)

# The whole suite (what CI runs), after the layering contract (import-linter, pyproject.toml):
# one pytest-xdist worker per core, a test file per worker at a time, the files with slow
# tests first (tests/conftest.py).
PYTEST_PARALLEL := -n auto --dist loadfile --no-loadscope-reorder
test: $(BIN)/.installed system-packages
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(PYTEST_PARALLEL)

# The quick tier for day-to-day work (a few minutes): the layering contract and every test
# not marked slow (the end-to-end runs, clusters, crawls and trainings are).
test-quick: $(BIN)/.installed system-packages
	$(BIN)/lint-imports
	$(BIN)/pytest -q -m "not slow" $(PYTEST_PARALLEL)

bench: $(BIN)/.installed system-packages
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tests/bench/run_all.py

clean:
	rm -rf $(DEMO) .pytest_cache
