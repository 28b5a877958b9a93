"""Griffe extension for the API reference: read the package's docstrings as the Markdown they almost are.

* Sphinx roles (``:class:`X```, ``:func:`~a.b.f```) become code spans; with ``~`` only the last component is
  shown, as Sphinx does.
* An ``Example:`` section header becomes ``Examples:``, the Google-style name that griffe renders as doctest
  code (otherwise ``[a]`` / ``[b]`` lines of a doctest read as a Markdown reference link).
* A citation such as ``in [0, 1] [0].`` is escaped, so it is not read as a reference link either.
* A paragraph ending in reStructuredText's literal-block marker ``::`` ends in ``:``; the indented block after
  it is already code in Markdown.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const|ref|doc):`(~?)([^`]+)`")


_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_CITATION = re.compile(r"(?<=\S) \[(\d+)\]")
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class MarkdownDocstrings(griffe.Extension):
    """Rewrite every docstring as described in the module docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_replace, obj.docstring.value)
            text = _LITERAL_MARKER.sub(":", _EXAMPLE_HEADER.sub(r"\1Examples:", text))
            obj.docstring.value = "\n".join(
                line if line.lstrip().startswith((">>>", "...")) else _CITATION.sub(r" \\[\1]", line)
                for line in text.split("\n")
            )
