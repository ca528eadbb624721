# Two commands for a fresh machine: `make demo` (the main job on the embedded sample)
# and `make test` (the whole test suite). Each sets itself up: Debian packages, a
# virtual environment in .venv, the toolkit and its dependencies.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests and benchmarks need: WordNet 3.0, Java for pyspark, GNU time.
DEBIAN_PACKAGES := wordnet-base openjdk-17-jre-headless time slurm-wlm munge
WORDNET := /usr/share/wordnet
DEMO := demo
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test bench system-packages clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The main job on the embedded default: the query list from the real Wikipedia excerpt
# of the gensim wheel, plus WordNet 3.0, thresholds scaled to the sample's size.
demo: $(BIN)/.installed
	@$(MAKE) --no-print-directory system-packages || echo "WordNet not installed: building without it"
	$(BIN)/wit build-queries --wiki-dump "$$($(BIN)/python -m wit.samples enwiki-excerpt 2>/dev/null)" \
		$$([ -e $(WORDNET)/data.noun ] && echo --wordnet $(WORDNET)) \
		--out $(DEMO)/queries --min-count 20 --min-pmi 10 --min-views 70
	@$(BIN)/python -c "import json; q = json.load(open('$(DEMO)/queries/metadata.json')); \
		print(f'{len(q):,} queries in $(DEMO)/queries; first 15:', q[:15])"

test: $(BIN)/.installed system-packages
	$(BIN)/pytest -q

bench: $(BIN)/.installed system-packages
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(DEMO) .pytest_cache
