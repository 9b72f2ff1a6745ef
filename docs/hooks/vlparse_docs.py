"""MkDocs hooks of the vlparse site.

- The CLI reference: the line ``<!-- vlparse-cli -->`` of a page becomes the ``--help`` of
  ``vlparse`` and of every sub-command, rendered from the parser itself
  (``vlparse.cli.build_parser``), so the page cannot drift from the code.
- The reports: ``reports/**`` of the repository join the site under ``reports/``, and links from
  the pages to ``../reports/...`` (right on GitHub) are rewritten to point there.
- The API reference covers every public name: each name in the ``__all__`` of a module that a
  page renders with ``::: module`` must get an anchor, else the build warns (and ``--strict``
  fails).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.plugins.vlparse_docs")

CLI_MARKER = "<!-- vlparse-cli -->"
REPO = Path(__file__).resolve().parents[2]
REPORTS = REPO / "reports"
_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")
_DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.MULTILINE)
_ANCHOR = re.compile(r'id="(vlparse[\w.]*)"')
_documented: set[str] = set()
_modules: set[str] = set()


def _commands(parser: argparse.ArgumentParser, prog: str) -> list[tuple[str, str]]:
    """``(command line, help text)`` of ``parser`` and of its sub-commands, depth first."""
    found = [(prog, parser.format_help())]
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prog} {name}")
    return found


def cli_reference() -> str:
    """Markdown: one section per command with its ``--help`` in a code block."""
    from vlparse import cli

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width
    try:
        sections = _commands(cli.build_parser(), "vlparse")
        # `vlparse probe masks` has a parser of its own, chosen before argparse runs
        masks = getattr(cli, "build_probe_masks_parser", None)
        if masks is not None:
            at = next(i for i, (cmd, _) in enumerate(sections) if cmd == "vlparse probe") + 1
            sections.insert(at, ("vlparse probe masks", masks().format_help()))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    parts = [f"## `{cmd}`\n\n```text\n{text.rstrip()}\n```\n" for cmd, text in sections]
    return "\n".join(parts)


def on_files(files: Files, config) -> Files:
    """Add the repository's reports (READMEs as pages, results and figures as files)."""
    for path in sorted(REPORTS.rglob("*")):
        if path.is_file():
            rel = path.relative_to(REPO).as_posix()
            files.append(File(rel, src_dir=str(REPO), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def _rewrite(link: str, page_dir: str, docs_dir: Path) -> str:
    """A link that leaves ``docs/`` for ``reports/`` -> the same file inside the site."""
    target = (docs_dir / page_dir / link.split("#")[0]).resolve()
    try:
        rel = target.relative_to(REPORTS)
    except ValueError:
        return link
    anchor = link[len(link.split("#")[0]):]
    return posixpath.relpath(f"reports/{rel.as_posix()}", page_dir or ".") + anchor


def on_pre_build(config) -> None:
    _documented.clear()
    _modules.clear()


def on_page_content(html: str, page, config, files) -> str:
    _documented.update(_ANCHOR.findall(html))
    return html


def on_post_build(config) -> None:
    """Warn about public names (``__all__``, dunders aside) of rendered modules left out."""
    for name in sorted(_modules):
        module = importlib.import_module(name)
        for member in getattr(module, "__all__", []):
            # a function named like its module is documented as module.function
            entries = {f"{name}.{member}", f"{name}.{member}.{member}"}
            if not member.startswith("__") and not entries & _documented:
                log.warning(f"API reference: {name}.{member} is public (in __all__) but has no "
                            "entry; give it a docstring")


def on_page_markdown(markdown: str, page, config, files) -> str:
    _modules.update(_DIRECTIVE.findall(markdown))
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if page.file.src_uri.startswith("reports/"):
        return markdown
    docs_dir = Path(config["docs_dir"])
    page_dir = posixpath.dirname(page.file.src_uri)
    return _LINK.sub(lambda m: f"]({_rewrite(m.group(1), page_dir, docs_dir)})", markdown)
