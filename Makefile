# make book   create .venv, install, run the default pipeline, build the HTML book
# make test   create .venv, install, run pytest (unit tests, doctests, golden notebooks)
# make bench  create .venv, install, run the benchmarks (JSON into artifacts/benchmarks/)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: book test bench install vendor clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	-PY=$(PY) bash _ext/vendor.sh
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest

vendor: $(STAMP)
	PY=$(PY) bash _ext/vendor.sh

book: $(STAMP) vendor
	$(PY) -m ftgeo run --config configs/default.yaml
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/extract.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/probes.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/directprobe.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/finetune.py --keep
	HF_HUB_OFFLINE=1 $(PY) benchmarks/chapters.py --keep
	HF_HUB_OFFLINE=1 $(PY) benchmarks/isotropy.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/chapter08_768.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/cka.py

clean:
	rm -rf _build _vendor_static
