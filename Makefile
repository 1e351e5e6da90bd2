# Two commands do all set-up on a machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo-out
# PyPI's torch wheel for Linux is the CUDA build (GBs of nvidia-* packages); the vision extra
# pins torch==2.13.0, and this index has that version's CPU wheel, installed first.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Extras install once per change of pyproject.toml.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

# Test references for FD/KID (torch-fidelity, clean-fid) and MDS (mosaicml-streaming's MDSWriter
# and StreamingDataset): --no-deps, because their declared dependencies pull torchvision and
# another torch (and streaming's transformers, cloud clients and numpy<2.2); only the parts the
# tests call are used.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --retries 1 --no-deps --index-url $(TORCH_INDEX) torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,vision]'
	$(BIN)/pip install --quiet --no-deps torch-fidelity==0.4.0 clean-fid==0.1.35 mosaicml-streaming==0.13.0
	touch $@

demo: $(VENV)/.demo
	$(BIN)/memgen demo --out $(DEMO_OUT)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check memgen pipelines tests benchmarks deploy

clean:
	rm -rf $(VENV) $(DEMO_OUT)
