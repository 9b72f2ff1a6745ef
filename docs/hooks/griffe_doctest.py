"""Griffe extension for the API reference: doctest lines (``>>>`` and their output) that stand
outside an ``Examples:`` section are wrapped in a ``pycon`` code block, so that Markdown does not
read an output such as ``[0.0, 1.0]`` as a link."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines (from a ``>>>`` line to the next blank) fenced."""
    out: list[str] = []
    in_block = False
    indent = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not in_block and stripped.startswith(">>>") and not out[-1:] == ["```pycon"]:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_block = True
        elif in_block and not stripped:
            out.append(f"{indent}```")
            in_block = False
        out.append(line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fence the bare doctests of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            if "```" not in obj.docstring.value:
                obj.docstring.value = fence_doctests(obj.docstring.value)
