"""The plugin under mypy's cache and daemon: warm and daemon runs report what a cold run does.

A saga module with two plugin errors is checked, then edited (one error fixed, another made);
each state is checked cold (a fresh cache), warm (mypy's incremental cache of the previous
state) and by `dmypy run` (a daemon that saw the previous state), and the errors must match.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mypy import api

from tests.mypy_support import PLUGIN_CONFIG

_FIXTURES = Path(__file__).parent.parent / "typing_tests" / "fixtures"
"""`sagafixtures`: the data types and functions the typing tests share."""

_SAGAS = """\
from sagafixtures import OrderData, PaymentData, refund, reserve

from spakky_saga import AbstractSaga, SagaFlow, saga_flow, saga_step, step


async def release(data: OrderData) -> {release_returns}:
    return None


reserved = step(reserve) >> {compensation}


class OrderSaga(AbstractSaga[OrderData]):
    @saga_step
    async def charge(self, data: PaymentData) -> None:
        return None

    def flow(self) -> SagaFlow[OrderData]:
        return saga_flow(reserved, self.charge)
"""

_BEFORE = _SAGAS.format(release_returns="None", compensation="refund")
"""A data mismatch in `>>` and a flow item over another type."""
_AFTER = _SAGAS.format(release_returns="OrderData | None", compensation="release")
"""The mismatch fixed; the compensation now returns data."""

_MAIN = """\
from sagas import OrderSaga, reserved

saga = OrderSaga()
both = reserved & reserved
"""


def _errors(stdout: str) -> list[str]:
    return sorted(line for line in stdout.splitlines() if ": error:" in line)


def _write(project: Path, sagas: str) -> None:
    (project / "sagas.py").write_text(sagas)
    (project / "main.py").write_text(_MAIN)


def _mypy(project: Path, cache: str) -> list[str]:
    stdout, _, _ = api.run(
        [
            "--config-file",
            str(project / "mypy.ini"),
            "--cache-dir",
            str(project / cache),
            "--no-error-summary",
            str(project / "main.py"),
            str(project / "sagas.py"),
        ]
    )
    return _errors(stdout.replace(f"{project}/", ""))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mypy.ini").write_text(f"{PLUGIN_CONFIG}mypy_path = {_FIXTURES}\n")
    _write(tmp_path, _BEFORE)
    return tmp_path


def test_a_warm_incremental_run_reports_what_a_cold_run_does(project: Path) -> None:
    first = _mypy(project, "warm-cache")
    warm = _mypy(project, "warm-cache")
    _write(project, _AFTER)
    warm_after_edit = _mypy(project, "warm-cache")
    cold_after_edit = _mypy(project, "cold-cache")
    assert len(first) == 2
    assert "[saga-data-mismatch]" in first[0] + first[1]
    assert "[saga-compensation-return]" in " ".join(cold_after_edit)
    assert (warm, warm_after_edit) == (first, cold_after_edit)


@pytest.fixture
def daemon(project: Path) -> Iterator[list[str]]:
    """The `dmypy` command line of a daemon private to this test, stopped afterwards."""
    command = [sys.executable, "-m", "mypy.dmypy", "--status-file", str(project / "dmypy.json")]
    yield command
    subprocess.run([*command, "stop"], capture_output=True, check=False, timeout=60)


def _dmypy_run(project: Path, daemon: list[str]) -> list[str]:
    run = subprocess.run(
        [
            *daemon,
            "run",
            "--",
            "--config-file",
            str(project / "mypy.ini"),
            "--cache-dir",
            str(project / "daemon-cache"),
            "--no-error-summary",
            "main.py",
            "sagas.py",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert "Traceback" not in run.stdout + run.stderr
    return _errors(run.stdout)


def test_dmypy_reports_what_a_cold_run_does_before_and_after_an_edit(
    project: Path, daemon: list[str]
) -> None:
    before = _dmypy_run(project, daemon)
    cold_before = _mypy(project, "cold-before")
    _write(project, _AFTER)
    after = _dmypy_run(project, daemon)
    cold_after = _mypy(project, "cold-after")
    assert len(cold_before) == 2
    assert cold_after != cold_before
    assert (before, after) == (cold_before, cold_after)
