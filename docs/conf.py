"""Sphinx configuration: the Markdown pages of docs/ (MyST) and the API reference from the docstrings.

Build with ``make docs`` (warnings are errors). Nothing here reaches the network: no intersphinx.
"""

from __future__ import annotations

import sb3_natural

project = "sb3_natural"
author = "sb3_natural developers"
copyright = "2026, sb3_natural developers"
version = release = sb3_natural.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
# SB3's own docstrings (inherited through the TD3/DDPG classes) use roles of SB3's site.
suppress_warnings = ["myst.header"]
nitpicky = False

html_theme = "sphinx_rtd_theme"
html_title = f"sb3_natural {release}"
html_show_sourcelink = False
