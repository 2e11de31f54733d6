"""The operator's and tester's docs say what the code does: docs/operations.md covers every
command and exit code of `spakky-saga`, docs/testing.md's figures are what the demo explorer
prints and its async examples can run, and the `testing` extra installs what they need."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from spakky_saga.cli import ATTENTION, NOT_FOUND, OK, STORE_FAILED, USAGE, parser

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
TESTING = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")


def test_operations_page_has_a_row_for_every_exit_code_and_a_recipe_for_every_command() -> None:
    table = OPERATIONS.split("## Exit codes", 1)[1]
    for code in (OK, ATTENTION, USAGE, NOT_FOUND, STORE_FAILED):
        assert re.search(rf"^\| {code} \|", table, re.MULTILINE), code
    commands = [
        "list",
        "show",
        "recover",
        "retry-compensation",
        "cancel",
        "resolve",
        "signal",
        "purge",
        "console",
        "graph",
    ]
    assert "{" + ",".join(commands) + "}" in parser().format_usage()  # every command, no other
    for command in commands:
        assert f"spakky-saga {command} " in OPERATIONS, command
    assert "--wait" in OPERATIONS


def test_operations_page_is_linked_from_the_readme_and_durability_docs() -> None:
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(operations.md)" in (ROOT / "docs" / "durability.md").read_text(encoding="utf-8")


def test_testing_docs_figures_are_what_the_demo_explorer_prints() -> None:
    done = subprocess.run(
        [sys.executable, "explore_order_saga.py"],
        cwd=ROOT / "examples",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    match = re.fullmatch(
        r"explore_failures\(CreateOrderSaga\): (\d+) scenarios, 0 violations, .*", first
    )
    assert match is not None, first
    how_long = TESTING.split("## How long it takes\n\nEach run", 1)[1]
    assert f"explores {match.group(1)}\nscenarios" in how_long


def test_testing_docs_show_how_async_tests_run_and_the_extra_installs_it() -> None:
    assert 'asyncio_mode = "auto"' in TESTING
    assert "@pytest.mark.asyncio" in TESTING
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["testing"]
    assert {re.split(r"[<>=]", spec, maxsplit=1)[0] for spec in extras} >= {
        "pytest",
        "pytest-asyncio",
        "looptime",
    }
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "example.com" not in readme.split("## Install", 1)[1].split("## Quick start", 1)[0]
