"""The repository itself: reports with provenance, numbers backed by them, no diary.

- Every ``results.json`` under ``reports/`` and ``benchmarks/`` follows
  ``reports/results.schema.json``, and every report folder is ``YYYY-MM-DD-topic`` with a README,
  its results, at most one figure and short scripts only (no raw logs).
- Every number in the ``vlparse`` column of a table in the README or the docs that names a report
  is in that report's ``results.json`` (to the precision shown).
- No tracked file (content or name) numbers the work by the order it was done in, names its
  tasks, or holds an absolute path of a machine.

Each check is a function of its input, shown failing on a planted bad example.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "reports" / "results.schema.json"
REPORT_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-([a-z0-9]+(?:-[a-z0-9]+)*)$")
FIGURES = {".png", ".svg", ".jpg", ".jpeg"}
SCRIPTS = {".py", ".sh"}
MAX_SCRIPT_BYTES = 8_000


# --------------------------------------------------------------------------- helpers
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def tracked_files() -> list[str]:
    listed = _git("ls-files", "-z")
    if listed is None:
        pytest.skip("not a git checkout")
    return [p for p in listed.split("\0") if p]


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


# --------------------------------------------------------------------------- schema
def _check(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """A checker for the keywords ``results.schema.json`` uses (when jsonschema is missing)."""
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    errors: list[str] = []
    wanted = schema.get("type")
    if wanted is not None:
        names = wanted if isinstance(wanted, list) else [wanted]
        if not any(isinstance(value, types[n]) for n in names):
            return [f"{where}: expected {wanted}, got {type(value).__name__}"]
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            errors += _check(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{where}: fewer than {schema['minProperties']} properties")
        errors += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += _check(item, props[key], f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += _check(item, extra, f"{where}.{key}")
    return errors


def schema_errors(record: Any, schema: dict[str, Any]) -> list[str]:
    """Every way ``record`` breaks ``schema`` (jsonschema when installed)."""
    try:
        import jsonschema
    except ImportError:
        return _check(record, schema, "$")
    validator = jsonschema.Draft202012Validator(schema)
    return [f"$.{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(record)]


def report_errors(folder: str, files: dict[str, int], record: Any) -> list[str]:
    """What is wrong with a report folder: its name, its files (name -> bytes), its results."""
    errors: list[str] = []
    name = REPORT_NAME.match(folder)
    if name is None:
        return [f"{folder}: not named YYYY-MM-DD-topic"]
    if "README.md" not in files:
        errors.append(f"{folder}: no README.md")
    if "results.json" not in files:
        errors.append(f"{folder}: no results.json")
    if isinstance(record, dict) and (record.get("date"), record.get("topic")) != name.groups():
        errors.append(f"{folder}: results.json says {record.get('date')} {record.get('topic')}")
    figures = [f for f in files if Path(f).suffix.lower() in FIGURES]
    if len(figures) > 1:
        errors.append(f"{folder}: more than one figure: {sorted(figures)}")
    for f, size in files.items():
        suffix = Path(f).suffix.lower()
        if f in ("README.md", "results.json") or suffix in FIGURES:
            continue
        if suffix not in SCRIPTS:
            errors.append(f"{folder}/{f}: neither README, results, figure nor script (raw logs "
                          "are summarised in the README, not kept)")
        elif size > MAX_SCRIPT_BYTES:
            errors.append(f"{folder}/{f}: a script of {size} bytes; keep it in the history")
    return errors


GOOD = {
    "topic": "ipot-speed", "date": "2026-11-22", "commit": "779f922",
    "hardware": "2 CPU cores", "commands": ["python benchmarks/ipot_speed.py"],
    "results": {"speedup": 3.48},
}


def test_schema_rejects_a_planted_bad_record():
    schema = _schema()
    assert schema_errors(GOOD, schema) == []
    bad = {k: v for k, v in GOOD.items() if k != "commit"}
    bad |= {"date": "23.11.2026", "commands": [], "results": {}, "notebook": 1}
    errors = "\n".join(schema_errors(bad, schema))
    for what in ("commit", "date", "commands", "results", "notebook"):
        assert what in errors, (what, errors)
    # the fallback checker, used without jsonschema, finds the same faults
    assert _check(GOOD, schema, "$") == []
    assert len(_check(bad, schema, "$")) >= 5


def test_report_folder_rules_catch_planted_faults():
    files = {"README.md": 900, "results.json": 700}
    assert report_errors("2026-11-22-ipot-speed", files, GOOD) == []
    assert report_errors("ipot-speed", files, GOOD)                     # no date
    assert report_errors("2026-11-23-ipot-speed", files, GOOD)          # date differs
    assert report_errors("2026-11-22-ipot-speed", {**files, "step.log": 10}, GOOD)
    assert report_errors("2026-11-22-ipot-speed", {**files, "a.png": 1, "b.png": 1}, GOOD)
    assert report_errors("2026-11-22-ipot-speed", {**files, "run.py": 20_000}, GOOD)


def _results_files() -> list[Path]:
    return sorted([*ROOT.glob("reports/**/results.json"), *ROOT.glob("benchmarks/**/results.json")])


def test_every_results_json_follows_the_schema():
    schema = _schema()
    found = _results_files()
    assert found, "no results.json under reports/"
    errors = []
    for path in found:
        errors += [f"{path.relative_to(ROOT)}: {e}"
                   for e in schema_errors(json.loads(path.read_text()), schema)]
    assert not errors, "\n".join(errors)


def test_every_report_folder_is_complete():
    errors = []
    for folder in sorted(p for p in (ROOT / "reports").iterdir() if p.is_dir()):
        files = {f.relative_to(folder).as_posix(): f.stat().st_size
                 for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
        results = folder / "results.json"
        record = json.loads(results.read_text()) if results.exists() else None
        errors += report_errors(folder.name, files, record)
    assert not errors, "\n".join(errors)


def test_report_commits_are_in_the_history():
    if _git("rev-parse", "--is-shallow-repository") != "false\n":
        pytest.skip("needs a full git clone")
    missing = []
    for path in _results_files():
        record = json.loads(path.read_text())
        commits = {record["commit"], *_nested_commits(record["results"])}
        missing += [f"{path.relative_to(ROOT)}: {c}" for c in sorted(commits)
                    if _git("cat-file", "-e", f"{c}^{{commit}}") is None]
    assert not missing, "commits not in this repository:\n" + "\n".join(missing)


def _nested_commits(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "commit" and isinstance(item, str):
                yield item
            else:
                yield from _nested_commits(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nested_commits(item)


# --------------------------------------------------------------------------- quoted numbers
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def backed(shown: str, values: Iterable[float]) -> bool:
    """``shown`` (e.g. ``0.777``, ``8,700``) is one of ``values`` rounded to its digits."""
    digits = len(shown.split(".")[1]) if "." in shown else 0
    target = float(shown.replace(",", ""))
    return any(abs(v - target) <= 0.5 * 10**-digits + 1e-9 for v in values)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def unbacked_numbers(markdown: str, base: Path) -> list[str]:
    """Numbers in the ``vlparse`` column of tables with a ``report`` column that the linked
    report's ``results.json`` does not hold; links are relative to ``base``."""
    problems: list[str] = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|") or i + 1 >= len(lines) or "---" not in lines[i + 1]:
            continue
        header = [c.lower() for c in _cells(line)]
        ours = next((k for k, c in enumerate(header) if c.startswith("vlparse")), None)
        if ours is None or "report" not in header:
            continue
        where = header.index("report")
        for row in lines[i + 2:]:
            if not row.lstrip().startswith("|"):
                break
            cells = _cells(row)
            links = LINK.findall(cells[where]) if where < len(cells) else []
            quoted = NUMBER.findall(cells[ours]) if ours < len(cells) else []
            if not quoted:
                continue
            if not links:
                problems.append(f"{row.strip()}: numbers without a report")
                continue
            target = (base / links[0]).resolve()
            results = (target if target.is_dir() else target.parent) / "results.json"
            if not results.exists():
                problems.append(f"{row.strip()}: {links[0]} has no results.json")
                continue
            values = list(_numbers(json.loads(results.read_text())))
            problems += [f"{row.strip()}: {n} is not in {links[0]}" for n in quoted
                         if not backed(n, values)]
    return problems


def test_unbacked_numbers_catch_a_planted_row():
    report = "reports/2026-11-23-quickstart-cpu/README.md"
    table = ("| measure | vlparse | report |\n|---|---|---|\n"
             f"| held-out ITM | 0.777 | [r]({report}) |\n")
    assert unbacked_numbers(table, ROOT) == []
    assert unbacked_numbers(table.replace("0.777", "0.787"), ROOT)
    assert unbacked_numbers(table.replace(f"[r]({report})", ""), ROOT)
    assert backed("8,700", [8699.89]) and not backed("8,700", [8690.0])


def test_numbers_quoted_in_readme_and_docs_are_backed_by_reports():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    problems = []
    for page in pages:
        problems += [f"{page.relative_to(ROOT)}: {p}"
                     for p in unbacked_numbers(page.read_text(), page.parent)]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- diary words, paths
# Spelt in pieces so that this file does not trip its own scan.
_S = "ses" + "sion"
FORBIDDEN = {
    "diary word": re.compile(rf"(?<![a-z]){_S}s?(?![a-z])", re.IGNORECASE),
    "issue number": re.compile(r"(?<![a-z])" + "iss" + r"ues? ?#?\d+", re.IGNORECASE),
    "branch name": re.compile(r"\b(?:wip-[a-z]+|" + "work" + r"trees?)\b", re.IGNORECASE),
    "absolute machine path": re.compile(
        r"(?<![\w.])/(?:" + "work" + "|" + "root" + "|" + "tmp" + r")\b|/home/[a-z_]"),
    # the raw-record folders that reports/ replaced
    "removed record folder": re.compile(r"\b(?:docs|benchmarks)/" + "results" + r"\b"),
}
# Legitimate uses, kept to pytest's own vocabulary: the fixture scope and the test run it names.
ALLOWED = [
    re.compile(r"""scope=["']""" + _S + r"""["']"""),
    re.compile(r"\bper test " + _S + r"\b"),
]


def forbidden_lines(path: str, text: str) -> list[str]:
    """``path:line: kind: text`` for each forbidden word or path in ``path`` or its ``text``."""
    hits = [f"{path}:0: {kind} in the file name"
            for kind, rx in FORBIDDEN.items() if rx.search(path)]
    for number, line in enumerate(text.splitlines(), 1):
        clean = line
        for rx in ALLOWED:
            clean = rx.sub("", clean)
        hits += [f"{path}:{number}: {kind}: {line.strip()[:120]}"
                 for kind, rx in FORBIDDEN.items() if rx.search(clean)]
    return hits


def _scan(select) -> list[str]:
    hits: list[str] = []
    for rel in tracked_files():
        if not select(rel):
            continue
        path = ROOT / rel
        try:
            data = path.read_bytes() if path.is_file() else b""
        except OSError:
            continue
        text = "" if b"\0" in data else data.decode("utf-8", errors="replace")
        hits += forbidden_lines(rel, text)
    return hits


def _in_code(rel: str) -> bool:
    return rel.startswith(("src/", "tests/"))


def test_forbidden_lines_catch_planted_examples():
    planted = "\n".join([
        "results of " + _S + " 9 are in the folder",
        "see " + "iss" + "ue 4 for the plan",
        "written to " + "/" + "work" + "/main/runs",
        "copied from /" + "tmp" + "/s8/qs1",
        "on branch " + "wip-" + "docs",
        "@pytest.fixture(scope=\"" + _S + "\")",
        "https://example.org/" + "work" + "/page and docs/" + "tmp" + "_notes.md",
        "the logs in docs/" + "results" + "/run.log",
    ])
    hits = forbidden_lines("notes/" + _S + "4/README.md", planted)
    assert [h.split(":")[1] for h in hits] == ["0", "1", "2", "3", "4", "5", "8"], hits


def test_no_diary_words_or_machine_paths_outside_src_and_tests():
    hits = _scan(lambda rel: not _in_code(rel))
    assert not hits, "\n".join(hits)


def test_no_diary_words_or_machine_paths_in_src_and_tests():
    hits = _scan(_in_code)
    assert not hits, "\n".join(hits)
