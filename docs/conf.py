"""Sphinx configuration for stability-user's documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from stability_user import __version__

project = "stability-user"
author = "stability-user maintainers"
copyright = "2026, stability-user maintainers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Names the docs mention but do not document themselves (third-party types).
nitpicky = False

html_theme = "furo"
html_title = f"stability-user {version}"
exclude_patterns = ["_build"]
