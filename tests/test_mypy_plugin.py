"""The plugin's behaviour as a whole: version gate, cache keys, incremental runs, and a hook
bug falling back to mypy's default type instead of crashing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mypy.plugin import FunctionContext, ReportConfigContext
from mypy.types import Type

import spakky_saga_mypy
from spakky_saga_mypy import SUPPORTED_MYPY, plugin
from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy.plugin import SpakkySagaPlugin
from tests.mypy_support import run_mypy, write_module

ORDER_MODULE = """
from spakky_saga import AbstractSaga, AbstractSagaData, SagaFlow, saga_flow, saga_step, step


class OrderData(AbstractSagaData):
    order_id: int = 0


class PaymentData(AbstractSagaData):
    amount: int = 0


async def reserve(data: OrderData) -> OrderData:
    return data


async def refund(data: PaymentData) -> None:
    return None


reveal_type(step(reserve))
mixed = step(reserve) >> refund
"""


def test_supported_mypy_version_gets_the_plugin_class() -> None:
    low, _ = SUPPORTED_MYPY

    assert plugin(f"{low[0]}.{low[1]}.1") is SpakkySagaPlugin
    assert plugin(f"{low[0]}.{low[1]}.0+dev.1a2b3c") is SpakkySagaPlugin
    assert plugin("2.4.1") is SpakkySagaPlugin


@pytest.mark.parametrize("version", ["1.19.1", "2.5.0", "3.0.0"])
def test_unsupported_mypy_version_is_rejected_with_the_supported_range(version: str) -> None:
    with pytest.raises(
        RuntimeError, match=rf"supports mypy >=1\.20,<2\.5, but this is mypy {version}\."
    ):
        plugin(version)


def test_cache_key_carries_the_plugin_version_and_sources() -> None:
    instance = SpakkySagaPlugin.__new__(SpakkySagaPlugin)
    instance._digest = "abc"
    context = ReportConfigContext(id="m", path="m.py", is_check=True)

    assert instance.report_config_data(context) == {
        "spakky_saga_mypy": spakky_saga_mypy.__version__,
        "sources": "abc",
    }


def test_mistake_is_reported_with_its_code_and_the_steps(tmp_path: Path) -> None:
    write_module(tmp_path, "orders", ORDER_MODULE)

    run = run_mypy(tmp_path, "orders.py")

    assert run.exit_code == 1
    assert run.lines == [
        'orders.py:21: note: Revealed type is "spakky_saga.flow.SagaStep[orders.OrderData]"',
        'orders.py:22: error: Saga-data mismatch in ">>": "reserve" works on "OrderData" but '
        '"refund" works on "PaymentData"; items combined together must take the same '
        "saga-data type (or a base class of it)  [saga-data-mismatch]",
    ]


def test_cold_and_warm_cache_runs_give_identical_output(tmp_path: Path) -> None:
    write_module(tmp_path, "orders", ORDER_MODULE)

    cold = run_mypy(tmp_path, "orders.py")
    warm = run_mypy(tmp_path, "orders.py")

    assert (tmp_path / ".mypy_cache").is_dir()
    assert warm == cold


def test_editing_a_base_saga_is_seen_by_the_next_incremental_run(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "base",
        """
        from spakky_saga import AbstractSaga, AbstractSagaData, saga_step


        class OrderData(AbstractSagaData):
            order_id: int = 0


        class PaymentData(AbstractSagaData):
            amount: int = 0


        class BaseSaga(AbstractSaga[OrderData]):
            @saga_step
            async def reserve(self, data: OrderData) -> None:
                return None
        """,
    )
    write_module(
        tmp_path,
        "child",
        """
        from spakky_saga import SagaFlow, saga_flow

        from base import BaseSaga, OrderData


        class ChildSaga(BaseSaga):
            def flow(self) -> SagaFlow[OrderData]:
                return saga_flow(self.reserve)
        """,
    )
    first = run_mypy(tmp_path, "base.py", "child.py")
    base = tmp_path / "base.py"
    base.write_text(
        base.read_text().replace("data: OrderData) -> None", "data: PaymentData) -> None")
    )

    second = run_mypy(tmp_path, "base.py", "child.py")

    assert first.lines == []
    assert second.lines == [
        'child.py:9: error: Saga "ChildSaga" runs on "OrderData" but its flow item 1 "reserve" '
        'works on "PaymentData"; every item of flow() must take "OrderData" or a base class '
        "of it  [saga-flow-data]"
    ]


def test_changing_a_base_sagas_data_type_is_checked_against_the_flow_annotation(
    tmp_path: Path,
) -> None:
    write_module(
        tmp_path,
        "base",
        """
        from spakky_saga import AbstractSaga, AbstractSagaData


        class OrderData(AbstractSagaData):
            order_id: int = 0


        class PaymentData(AbstractSagaData):
            amount: int = 0


        class BaseSaga(AbstractSaga[OrderData]):
            pass
        """,
    )
    write_module(
        tmp_path,
        "child",
        """
        from spakky_saga import SagaFlow

        from base import BaseSaga, OrderData


        class ChildSaga(BaseSaga):
            def __init__(self, stored: SagaFlow[OrderData]) -> None:
                self.stored = stored

            def flow(self) -> SagaFlow[OrderData]:
                return self.stored
        """,
    )
    first = run_mypy(tmp_path, "base.py", "child.py")
    base = tmp_path / "base.py"
    base.write_text(base.read_text().replace("[OrderData]", "[PaymentData]"))

    second = run_mypy(tmp_path, "base.py", "child.py")
    third = run_mypy(tmp_path, "base.py", "child.py")

    assert first.lines == []
    assert second.lines[0] == (
        'child.py:11: error: Saga "ChildSaga" runs on "PaymentData" but its flow() is declared '
        'to return "SagaFlow[OrderData]"; declare it "-> SagaFlow[PaymentData]", or derive '
        '"ChildSaga" from AbstractSaga[OrderData] if the saga runs on "OrderData"  '
        "[saga-flow-data]"
    )
    assert second.lines[1].endswith("[override]")
    assert len(second.lines) == 2
    assert third == second


@pytest.fixture
def broken_step_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx: FunctionContext) -> Type:
        raise ValueError("simulated bug")

    hooks: dict[str, Callable[[FunctionContext], Type]] = dict(SpakkySagaPlugin._FUNCTION_HOOKS)
    hooks[names.STEP_BUILDER] = boom
    monkeypatch.setattr(SpakkySagaPlugin, "_FUNCTION_HOOKS", hooks)
    monkeypatch.delenv("SPAKKY_SAGA_MYPY_DEBUG", raising=False)


@pytest.mark.usefixtures("broken_step_hook")
def test_hook_bug_falls_back_to_the_default_type_with_a_note(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "orders",
        """
        from spakky_saga import AbstractSagaData, step


        class OrderData(AbstractSagaData):
            order_id: int = 0


        async def reserve(data: OrderData) -> OrderData:
            return data


        reveal_type(step(reserve))
        """,
    )

    run = run_mypy(tmp_path, "orders.py")

    assert run.exit_code == 0, run.stdout
    assert run.lines == [
        "orders.py:13: note: spakky-saga mypy plugin: internal error in boom (ValueError: "
        "simulated bug); falling back to mypy's default type. Please report this.",
        'orders.py:13: note: Revealed type is "spakky_saga.flow.SagaStep[Any]"',
    ]


@pytest.mark.usefixtures("broken_step_hook")
def test_hook_bug_propagates_in_debug_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPAKKY_SAGA_MYPY_DEBUG", "1")
    write_module(tmp_path, "orders", ORDER_MODULE)

    run = run_mypy(tmp_path, "orders.py")

    assert run.exit_code == 2
    assert "orders.py:21: error: INTERNAL ERROR" in capsys.readouterr().err
