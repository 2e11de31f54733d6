"""The pytest plugin: its fixtures, its looptime marking, and that it is declared."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import SagaEngine, SagaStatus, saga_flow, step
from spakky_saga.testing import FailureExplorer, VirtualClock, pytest_plugin
from tests.testing.flows import Order, Services, order_flow
from tests.testing.support import needs_looptime

ROOT = Path(__file__).resolve().parents[2]


@needs_looptime
async def test_saga_engine_runs_on_saga_clock(
    saga_clock: VirtualClock, saga_engine: SagaEngine
) -> None:
    async def hang(data: Order) -> None:
        await asyncio.get_running_loop().create_future()

    started = time.perf_counter()

    result = await saga_engine.run(saga_flow(step(hang, timeout=timedelta(hours=1))), Order())

    assert time.perf_counter() - started < 0.5
    assert saga_clock.loop_is_virtual  # the plugin marked this test for looptime
    assert result.status is SagaStatus.FAILED
    assert result.elapsed == timedelta(hours=1)
    assert saga_clock.now == 3600


@needs_looptime
async def test_explore_failures_fixture_runs_on_saga_engine(
    explore_failures: FailureExplorer, saga_engine: SagaEngine
) -> None:
    report = await explore_failures(order_flow(Services()), Order(), timeouts=True)

    assert explore_failures.engine is saga_engine
    assert repr(explore_failures) == f"FailureExplorer(engine={saga_engine!r})"
    assert report.ok, str(report)


@pytest.mark.looptime(False)
async def test_a_test_can_keep_real_loop_time(saga_clock: VirtualClock) -> None:
    assert not saga_clock.loop_is_virtual


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    entry_points = project["project"]["entry-points"]["pytest11"]

    assert entry_points == {"spakky_saga": "spakky_saga.testing.pytest_plugin"}


@needs_looptime
def test_the_fixtures_work_in_another_project_beside_its_own_clock_and_engine(
    tmp_path: Path,
) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture
            def clock():
                return "the project's own clock"

            @pytest.fixture
            def engine():
                return "the project's own engine"
            """
        )
    )
    (tmp_path / "test_saga.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            from datetime import timedelta

            from spakky_saga import AbstractSagaData, Retry, step, saga_flow

            class Data(AbstractSagaData):
                n: int = 0

            async def hang(data):
                await asyncio.get_running_loop().create_future()

            async def test_fixtures(clock, engine, saga_clock, saga_engine, explore_failures):
                assert clock == "the project's own clock"
                assert engine == "the project's own engine"
                flow = saga_flow(step(hang, timeout=timedelta(seconds=30)) | Retry(2))
                result = await saga_engine.run(flow, Data())
                assert result.elapsed == timedelta(seconds=61)
                assert saga_clock.sleeps == (1.0,)
                report = await explore_failures(flow, Data(), timeouts=True)
                assert [o.outcome for o in report.scenarios] == ["FAILED"] * 3
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-W",
            "ignore::DeprecationWarning",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_without_looptime_no_test_is_marked() -> None:
    class NoPlugins:
        def has_plugin(self, name: str) -> bool:
            return False

    class Config:
        pluginmanager = NoPlugins()

    class Item:
        fixturenames = ("saga_clock",)

        def add_marker(self, marker: object) -> None:
            raise AssertionError("marked without looptime")

    pytest_plugin.pytest_collection_modifyitems(Config(), [Item()])  # type: ignore[arg-type, list-item] # duck-typed stand-ins
