"""Every scenario gives the same observations on the documented package (spakky-saga 8.5.0)
and on ours, except the deliberate differences, which must still differ.

The runner runs once per package per session, each package in its own interpreter: upstream
in `$SPAKKY_SAGA_UPSTREAM_PYTHON` (default `.venv/upstream/bin/python`, made by
`scripts/upstream-venv.sh`), ours in this interpreter's executable.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import tests.compat.scenarios  # noqa: F401 - the scenarios register themselves on import
from tests.compat.harness import DELIBERATE, SCENARIOS, Observation

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_PYTHON_VARIABLE = "SPAKKY_SAGA_UPSTREAM_PYTHON"
RUN_TIME_LIMIT = 120  # seconds, for the whole runner; it takes about one


def _upstream_python() -> str:
    python = os.environ.get(UPSTREAM_PYTHON_VARIABLE) or str(ROOT / ".venv/upstream/bin/python")
    if not Path(python).is_file():
        message = (
            f"no upstream interpreter at {python}: run scripts/upstream-venv.sh (it creates "
            f".venv/upstream with spakky-saga 8.5.0), or set {UPSTREAM_PYTHON_VARIABLE}"
        )
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def _run(python: str, package: str, env: dict[str, str]) -> dict[str, Observation]:
    process = subprocess.run(
        [python, "-m", "tests.compat.runner", package],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIME_LIMIT,
        check=False,
    )
    if process.returncode != 0:
        pytest.fail(
            f"the compat runner failed on {package} ({python}), exit {process.returncode}:\n"
            f"{process.stderr}"
        )
    observations: dict[str, Observation] = json.loads(process.stdout)
    return observations


@pytest.fixture(scope="session")
def observations() -> Iterator[dict[str, dict[str, Observation]]]:
    """{package: {scenario: observation}}, both packages run at the same time."""
    upstream = _upstream_python()
    # The upstream interpreter must not see our sources (PYTHONPATH=src in development).
    upstream_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        ours = pool.submit(_run, sys.executable, "ours", dict(os.environ))
        theirs = pool.submit(_run, upstream, "upstream", upstream_env)
        yield {"upstream": theirs.result(), "ours": ours.result()}


def _pop(observation: Any, path: str) -> object:
    """Remove the value at a dotted path (absent: the marker `<absent>`) and return it."""
    *parents, last = path.split(".")
    node = observation
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            return "<absent>"
        node = node[key]
    if not isinstance(node, dict):
        return "<absent>"
    return node.pop(last, "<absent>")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_upstream(
    name: str, observations: dict[str, dict[str, Observation]]
) -> None:
    upstream = observations["upstream"][name]
    ours = observations["ours"][name]
    assert "crashed" not in upstream, f"the scenario itself is broken: {upstream['crashed']}"
    marked = DELIBERATE.get(name)
    if marked is None:
        assert ours == upstream
        return
    # Copies via JSON, so popping keys leaves the session's observations intact.
    upstream, ours = json.loads(json.dumps(upstream)), json.loads(json.dumps(ours))
    for key in marked.keys:
        theirs_value, ours_value = _pop(upstream, key), _pop(ours, key)
        assert ours_value != theirs_value, (
            f"{key} no longer differs from upstream, but is marked as a deliberate difference "
            f"({marked.reason}); remove it from the scenario's keys"
        )
    for key in marked.unordered:
        theirs_items, ours_items = _pop(upstream, key), _pop(ours, key)
        assert _multiset(ours_items) == _multiset(theirs_items), (
            f"{key}: not the same items in another order ({marked.reason})"
        )
    assert ours == upstream, f"outside the deliberate difference ({marked.reason})"


def _multiset(items: object) -> list[str]:
    if not isinstance(items, list):
        return [json.dumps(items, sort_keys=True)]
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def test_there_are_enough_scenarios() -> None:
    assert len(SCENARIOS) >= 60
