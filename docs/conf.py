"""Sphinx configuration: MyST Markdown pages, the furo theme, autodoc of the public API."""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

project = "topchef-worker"
author = "topchef-worker developers"
copyright = "2026, topchef-worker developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "benchmarks.intro.md", "examples"]
html_theme = "furo"
html_title = "topchef-worker"
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True


class CommandHelp(SphinxDirective):
    """``.. topchef-help:: COMMAND``: the command's --help, from the parser itself,
    so that the CLI reference cannot drift from the code."""

    required_arguments = 0
    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        from topchef_worker.cli import build_parser

        parser = build_parser()
        if self.arguments:
            actions = [a for a in parser._actions if a.dest == "command"]
            parser = actions[0].choices[self.arguments[0]]  # type: ignore[index]
        text = parser.format_help().replace("usage: ", "usage: ", 1)
        return [nodes.literal_block(text, text)]


def setup(app: Sphinx) -> None:
    app.add_directive("topchef-help", CommandHelp)


napoleon_use_ivar = True
