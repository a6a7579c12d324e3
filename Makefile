# The two commands a user needs are `make demo` and `make test`; each sets up a project-local
# virtual environment (.venv) the first time and rebuilds the compiled kernels when they change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edu_seg-installed

# The bundled OpenBLAS picks AVX2 ("Haswell") kernels on this AVX-512 CPU unless told otherwise;
# edu_seg sets this itself when it is imported first, and the Makefile sets it for every run.
export OPENBLAS_CORETYPE ?= $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo SkylakeX)

.PHONY: all build demo test bench notebooks book book-check clean

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

# The course website (Sphinx + MyST-NB): chapters, executed notebooks, API reference.
$(VENV)/.edu_seg-book: $(STAMP)
	@echo "edu_seg: installing the website tools (Sphinx, MyST-NB, Furo, Selenium)"
	$(PY) -m pip install --quiet sphinx myst-nb furo selenium
	touch $@

book: build $(VENV)/.edu_seg-book
	@echo "edu_seg: building build/book/html, running every notebook in full (long: each trains its models)"
	EDU_SEG_FAST=0 $(VENV)/bin/sphinx-build -q -c book . build/book/html
	@echo "edu_seg: open build/book/html/index.html"

# The same site with the notebooks in fast mode, then every page opened in headless Chromium
# (Debian: apt-get install chromium chromium-driver).
book-check: build $(VENV)/.edu_seg-book
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "book-check needs chromium and chromedriver: apt-get install chromium chromium-driver"; exit 1; }
	EDU_SEG_FAST=1 $(VENV)/bin/sphinx-build -q -c book . build/book-fast/html
	$(PY) book/check_site.py build/book-fast/html

clean:
	rm -rf build edu_seg/_kernels/*.so kernels/*.c
