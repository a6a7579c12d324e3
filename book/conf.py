"""Sphinx configuration of the course website (``make book``; ``make book-check`` tests it).

The site is built from the repository itself: the chapters (Markdown, through MyST), the
notebooks (executed by MyST-NB while the site is built, so every page shows its outputs and
pictures while the repository keeps them stripped), the README, CONTRIBUTING.md, the measured
tables, and an API reference generated from the docstrings. The source folder is the
repository root, so the chapters' relative links (``../notebooks/...``, ``../edu_seg/...``)
work on the site as they do on disk.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "edu_seg: semantic segmentation, built by hand"
author = "the edu_seg authors"
root_doc = "book/index"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
include_patterns = ["book/*.md", "chapters/*.md", "notebooks/*.ipynb", "README.md",
                    "CONTRIBUTING.md", "zoo/RESULTS.md", "zoo/KEY_POINTS.md",
                    "benchmarks/RESULTS.md"]
exclude_patterns = ["build", ".venv", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_title = "edu_seg"
# The start page is book/index.html; this folder adds an index.html at the site's root that
# forwards to it.
html_extra_path = ["root"]
html_favicon = "favicon.svg"          # a page without one makes the browser ask for /favicon.ico

# Notebooks: executed during the build. EDU_SEG_FAST=1 (make book-check) makes them quick;
# make book runs them in full, as a learner would.
nb_execution_mode = "force"
nb_execution_timeout = int(os.environ.get("EDU_SEG_BOOK_TIMEOUT", "3600"))
nb_execution_raise_on_error = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# The API reference: numpydoc docstrings.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True          # a dataclass's Attributes section, not a second description
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
suppress_warnings = ["myst.header"]
