# charrnn: `make demo` trains a small model on Shakespeare and samples from it;
# `make test` runs the test suite. Both set everything up first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch installed when the environment has none. This pin resolves to the CPU build on the
# machines this project is developed on; elsewhere, install the torch you want into $(VENV)
# first (CUDA, ROCm, ...), or run e.g. `make TORCH="torch --index-url URL"`.
TORCH  ?= torch==2.13.0
DEMO_SECONDS ?= 300

.PHONY: setup demo test mutants bench bench-quick bench-serve corpus clean help
help:
	@echo "make demo   set up, get the Shakespeare corpus, train ~$(DEMO_SECONDS)s, print a sample"
	@echo "make test   set up and run the tests"
	@echo "make setup  create $(VENV) and install charrnn into it"
	@echo "make corpus get corpora/shakespeare.txt"
	@echo "make bench  measure speed, idle and on a busy machine (charrnn bench --load; bench-quick: one minute, idle)"
	@echo "make bench-serve  requests/s, latency and engine GFLOP/s of charrnn serve with 1, 4, 16 and 64 clients (about a minute)"
	@echo "make mutants  mutation testing of the core modules, prints the survivors (about 20 min; MODULES=\"step schedule\" for some)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,plot,serve]"
	touch $@

corpus: corpora/shakespeare.txt

corpora/shakespeare.txt: | $(VENV)/.installed
	$(BIN)/python -m charrnn.data.datasets shakespeare $@

demo: setup corpus
	$(BIN)/charrnn train corpora/shakespeare.txt --time-budget $(DEMO_SECONDS) --overwrite
	@echo "----- sample -----" >&2
	$(BIN)/charrnn sample --checkpoint checkpoints/shakespeare/best.pt --length 800 --temp 0.7 --seed 1

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# Mutation testing (README, Development): not part of `make test` nor of CI.
MODULES ?=
mutants: setup
	$(BIN)/python scripts/mutants.py $(MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .charrnn-cache

bench: setup
	$(BIN)/charrnn bench --load

bench-quick: setup
	$(BIN)/charrnn bench --quick

bench-serve: setup
	$(BIN)/charrnn bench --no-speed --serve
