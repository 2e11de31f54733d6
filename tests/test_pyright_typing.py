"""The library's annotations alone, under basedpyright (no mypy plugin): typing_tests/pyright/.

Each case file marks what pyright must say, line by line, in a trailing comment:
`# E: rule[, rule]` errors of those rules, `# W: rule` warnings, `# R: Type` what
`reveal_type` shows, `# unseen: why` a mistake pyright cannot see (nothing reported; the
mypy plugin reports it). Any other error or warning fails the case: a false positive on the
sound flows, or a mistake reported under another rule than marked.

The sound flows' revealed types are also checked against mypy with our plugin, so that
pyright users see the same types as mypy users.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from mypy import api

_CASES = Path(__file__).parent.parent / "typing_tests" / "pyright"
_FIXTURES = _CASES.parent / "fixtures"
_MARK = re.compile(r"#\s*(E|W|R|unseen):\s*(.+?)\s*$")
_REVEALED = re.compile(r'^Type of ".*" is "(?P<type>.*)"$', re.DOTALL)
_MYPY_REVEALED = re.compile(r'^[^:]+:(?P<line>\d+): note: Revealed type is "(?P<type>.*)"$')
_CASE_FILES = sorted(path.name for path in _CASES.glob("*.py"))

type Marks = dict[int, dict[str, set[str]]]
"""Line (1-based) -> kind ("E", "W", "R", "unseen") -> what is expected."""


def _marks(path: Path) -> Marks:
    marks: Marks = defaultdict(lambda: defaultdict(set))
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        found = _MARK.search(line)
        if found is None:
            continue
        kind, text = found.groups()
        values = {text} if kind in ("R", "unseen") else {rule.strip() for rule in text.split(",")}
        marks[number][kind] |= values
    return marks


@pytest.fixture(scope="module")
def pyright_diagnostics() -> dict[str, list[dict[str, Any]]]:
    """basedpyright's diagnostics of every case file, by file name (one run for all)."""
    basedpyright = Path(sys.executable).parent / "basedpyright"
    run = subprocess.run(
        [
            str(basedpyright),
            "--outputjson",
            "--project",
            str(_CASES),
            "--pythonpath",
            sys.executable,
            str(_CASES),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(run.stdout)
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for diagnostic in report["generalDiagnostics"]:
        by_file[Path(diagnostic["file"]).name].append(diagnostic)
    return by_file


def _line(diagnostic: dict[str, Any]) -> int:
    return int(diagnostic["range"]["start"]["line"]) + 1


def test_basedpyright_is_the_pinned_version() -> None:
    """The cases' expectations are those of the version pinned in pyproject's dev group."""
    pinned = re.search(
        r'"basedpyright==([\d.]+)"', (_CASES.parent.parent / "pyproject.toml").read_text()
    )
    assert pinned is not None
    run = subprocess.run(
        [str(Path(sys.executable).parent / "basedpyright"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"basedpyright {pinned.group(1)}" in run.stdout


@pytest.mark.parametrize("case", _CASE_FILES)
def test_pyright_reports_exactly_the_marked_errors_and_warnings(
    case: str, pyright_diagnostics: dict[str, list[dict[str, Any]]]
) -> None:
    marks = _marks(_CASES / case)
    reported: dict[int, set[str]] = defaultdict(set)
    for diagnostic in pyright_diagnostics[case]:
        severity = diagnostic["severity"]
        if severity in ("error", "warning"):
            kind = "E" if severity == "error" else "W"
            reported[_line(diagnostic)].add(f"{kind}: {diagnostic.get('rule', '?')}")
    expected = {
        line: {f"{kind}: {rule}" for kind in ("E", "W") for rule in kinds.get(kind, ())}
        for line, kinds in marks.items()
    }
    lines = sorted(set(reported) | {line for line, rules in expected.items() if rules})
    differences = {
        line: {"expected": sorted(expected.get(line, ())), "reported": sorted(reported[line])}
        for line in lines
        if expected.get(line, set()) != reported[line]
    }
    assert differences == {}


@pytest.mark.parametrize("case", _CASE_FILES)
def test_pyright_reveals_the_marked_types(
    case: str, pyright_diagnostics: dict[str, list[dict[str, Any]]]
) -> None:
    expected = {line: kinds["R"] for line, kinds in _marks(_CASES / case).items() if "R" in kinds}
    revealed: dict[int, set[str]] = defaultdict(set)
    for diagnostic in pyright_diagnostics[case]:
        found = _REVEALED.match(diagnostic["message"])
        if diagnostic["severity"] == "information" and found is not None:
            revealed[_line(diagnostic)].add(found.group("type"))
    assert dict(revealed) == expected


def test_mypy_with_the_plugin_reveals_the_types_pyright_reveals(tmp_path: Path) -> None:
    """Every `# R:` of the sound flows, as mypy with our plugin shows it (without module
    paths), and no error: both checkers type the sound flows alike."""
    case = _CASES / "sound_flows.py"
    config = tmp_path / "mypy.ini"
    config.write_text(
        f"[mypy]\nplugins = spakky_saga_mypy\nstrict = True\nmypy_path = {_FIXTURES}\n"
    )
    stdout, _, _ = api.run(
        ["--config-file", str(config), "--cache-dir", str(tmp_path / "cache"), str(case)]
    )
    revealed: dict[int, set[str]] = defaultdict(set)
    others: list[str] = []
    for line in stdout.splitlines():
        found = _MYPY_REVEALED.match(line)
        if found is not None:
            revealed[int(found.group("line"))].add(_short(found.group("type")))
        elif ": error:" in line:
            others.append(line)
    expected = {line: kinds["R"] for line, kinds in _marks(case).items() if "R" in kinds}
    assert (dict(revealed), others) == (expected, [])


def _short(mypy_type: str) -> str:
    """`spakky_saga.flow.SagaStep[sagafixtures.OrderData]` as pyright writes it."""
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", mypy_type)
