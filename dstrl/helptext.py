"""How ``--help`` reads the configuration's docstrings (tyro builds it from them)."""

from __future__ import annotations

import inspect
import re

import tyro
import tyro._docstrings

DEFAULT_IN_DOCSTRING = tyro.conf.arg(help_behavior_hint="")
"""Marks an option left at None and resolved per algorithm or task: its docstring gives the
default, and --help should not add "(default: None)"."""


def one_paragraph_docstrings() -> None:
    """Have tyro join a field docstring's source line breaks. It keeps a break wherever the next
    line does not start with a letter, which an indented docstring line never does, so --help
    printed every option's text broken at its source lines, then wrapped again. Blank lines
    still part paragraphs."""
    parse = tyro._docstrings.parse_docstring_from_object
    if getattr(parse, "joins_lines", False):
        return

    def parsed(obj: object) -> dict[str, str]:
        docs = parse(obj)
        return {
            name: re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(doc))
            for name, doc in docs.items()
        }

    parsed.joins_lines = True
    tyro._docstrings.parse_docstring_from_object = parsed
