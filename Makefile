# The two commands a user needs are `make demo` and `make test`; each sets up a project-local
# virtual environment (.venv) the first time and rebuilds the compiled kernels when they change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edu_seg-installed

# The bundled OpenBLAS picks AVX2 ("Haswell") kernels on this AVX-512 CPU unless told otherwise;
# edu_seg sets this itself when it is imported first, and the Makefile sets it for every run.
export OPENBLAS_CORETYPE ?= $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo SkylakeX)

.PHONY: all build demo test bench notebooks clean

all: build

$(STAMP): pyproject.toml setup.py
	@echo "edu_seg: creating .venv and installing numpy, scipy, Cython, matplotlib, pytest ..."
	@echo "         (first run only: about 2 minutes, longer on a slow network)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "setuptools>=77" "Cython>=3" "numpy>=2" scipy
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

build: $(STAMP)
	@echo "edu_seg: compiling the kernels that changed (about 1 minute the first time)"
	$(PY) setup.py --quiet build_ext --inplace

demo: build
	$(PY) -m edu_seg.cli demo

test: build
	$(PY) -m pytest -rs

bench: build
	$(PY) benchmarks/run.py

notebooks: build
	$(PY) -m pip install --quiet jupyter nbconvert
	mkdir -p build/notebooks
	EDU_SEG_FAST=0 $(VENV)/bin/jupyter nbconvert --execute --to html --output-dir build/notebooks notebooks/*.ipynb

clean:
	rm -rf build edu_seg/_kernels/*.so kernels/*.c
