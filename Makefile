# Two commands: `make demo` (set up, build the demo corpus, pretrain, write the report)
# and `make test` (set up, run the tests). Everything lands in .venv, corpora/ and runs/.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch on this machine's disk; a GPU user can set e.g. TORCH_SPEC="torch>=2.11"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: install demo test clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

corpora/demo/manifest.json: recipes/demo/data.yaml $(VENV)/.installed
	$(BIN)/python -m data_gen build --config recipes/demo/data.yaml --overwrite true

demo: corpora/demo/manifest.json
	$(BIN)/python -m pipeline.pretrain --config recipes/demo/pretrain.yaml --overwrite_output_dir true
	@echo "demo done: open runs/demo/report.md and runs/demo/phases.png"

test: $(VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf corpora/demo runs/demo
