"""Log lines: the documented package's text and levels (`[saga=NAME step=STEP status=...]`),
with what we know beyond it (saga id, attempt, precise elapsed, error message) in structured
fields on the record."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaCompensationFailedError,
    SagaEngine,
    Skip,
    saga_flow,
    step,
)
from tests.support import Journal, OrderData, capture_saga_logs, saga_messages


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    capture_saga_logs(caplog)


def saga_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("spakky_saga")
    ]


async def test_a_completed_saga_logs_start_each_step_and_end(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.ok("issue", takes=0.25), journal.ok("reserve", takes=0.0015))

    await engine.run(flow, order, saga_name="Order")

    assert saga_lines(caplog) == [
        ("INFO", "[saga=Order status=started]"),
        ("INFO", "[saga=Order step=issue status=started]"),
        ("INFO", "[saga=Order step=issue status=completed elapsed=250ms]"),
        ("INFO", "[saga=Order step=reserve status=started]"),
        ("INFO", "[saga=Order step=reserve status=completed elapsed=2ms]"),
        ("INFO", "[saga=Order status=COMPLETED elapsed=252ms]"),
    ]


async def test_a_saga_run_without_a_name_logs_as_anonymous(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.run(saga_flow(journal.ok("a")), order)

    assert saga_messages(caplog)[0] == "[saga=<anonymous> status=started]"


async def test_a_failed_saga_logs_the_failure_compensation_and_end(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.transaction("issue", takes=0.002), journal.fail("charge"))

    await engine.run(flow, order, saga_name="Order")

    assert saga_lines(caplog) == [
        ("INFO", "[saga=Order status=started]"),
        ("INFO", "[saga=Order step=issue status=started]"),
        ("INFO", "[saga=Order step=issue status=completed elapsed=2ms]"),
        ("INFO", "[saga=Order step=charge status=started]"),
        ("WARNING", "[saga=Order step=charge status=failed error=Boom]"),
        ("INFO", "[saga=Order step=issue status=compensating]"),
        ("INFO", "[saga=Order step=issue status=compensated elapsed=0ms]"),
        ("INFO", "[saga=Order status=FAILED elapsed=2ms]"),
    ]


async def test_a_retry_logs_each_failed_attempt_and_the_next_attempt(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    retry = Retry(3, ExponentialBackoff(0.5))

    await engine.run(saga_flow(step(journal.fail("pay", times=2), on_error=retry)), order)

    assert saga_lines(caplog)[1:-1] == [
        ("INFO", "[saga=<anonymous> step=pay status=started]"),
        ("WARNING", "[saga=<anonymous> step=pay status=failed error=Boom]"),
        ("INFO", "[saga=<anonymous> step=pay status=retry attempt=2]"),
        ("WARNING", "[saga=<anonymous> step=pay status=failed error=Boom]"),
        ("INFO", "[saga=<anonymous> step=pay status=retry attempt=3]"),
        ("INFO", "[saga=<anonymous> step=pay status=completed elapsed=0ms]"),
    ]
    retries = [r for r in caplog.records if "status=retry" in r.getMessage()]
    assert [r.saga_delay_s for r in retries] == [0.5, 1.0]  # type: ignore[attr-defined]


async def test_a_skipped_step_logs_its_failure_and_the_saga_completes(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.run(saga_flow(step(journal.fail("notify"), on_error=Skip())), order)

    assert saga_lines(caplog)[2:] == [
        ("WARNING", "[saga=<anonymous> step=notify status=failed error=Boom]"),
        ("INFO", "[saga=<anonymous> status=COMPLETED elapsed=0ms]"),
    ]


async def test_a_failed_compensation_is_logged_as_an_error_then_the_saga_aborts(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(step(journal.ok("a"), compensate=journal.undo_fail("a")), journal.fail("b"))

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, order)

    assert saga_lines(caplog)[-3:] == [
        ("INFO", "[saga=<anonymous> step=a status=compensating]"),
        ("ERROR", "[saga=<anonymous> step=a status=failed error=Boom]"),
        (
            "WARNING",
            "[saga=<anonymous> status=aborted error=SagaCompensationFailedError elapsed=0ms]",
        ),
    ]


async def test_records_carry_the_saga_id_attempt_precise_elapsed_and_error_message(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(
        journal.ok("a", takes=0.0123), step(journal.fail("b", times=1), on_error=Retry(2))
    )

    await engine.run(flow, order, saga_name="Order")

    committed = next(r for r in caplog.records if "step=a status=completed" in r.getMessage())
    failed = next(r for r in caplog.records if "status=failed" in r.getMessage())
    assert (
        vars(committed).items()
        >= {
            "saga_event": "step_committed",
            "saga_name": "Order",
            "saga_id": order.saga_id,
            "saga_step": "a",
            "saga_attempt": 1,
            "saga_compensation": False,
        }.items()
    )
    assert committed.saga_elapsed_ms == pytest.approx(12.3)  # type: ignore[attr-defined]
    assert (failed.saga_error, failed.saga_error_message) == ("Boom", "b failed")  # type: ignore[attr-defined]
    assert failed.saga_attempt == 1  # type: ignore[attr-defined]


async def test_every_record_is_on_the_engine_logger(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(
        journal.transaction("a"),
        step(journal.fail("b", times=1), on_error=Retry(2)),
        step(journal.fail("c"), on_error=Skip()),
        journal.fail("d"),
    )

    await engine.run(flow, order)

    records = [r for r in caplog.records if r.name.startswith("spakky_saga")]
    assert len(records) > 10
    assert {r.name for r in records} == {"spakky_saga.engine"}
    assert all(r.getMessage().startswith("[saga=<anonymous> ") for r in records)


async def test_at_warning_level_a_failed_saga_logs_only_the_failed_step(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog, logging.WARNING)
    flow = saga_flow(journal.transaction("a"), journal.fail("b"))

    await engine.run(flow, order, saga_name="Order")

    assert saga_messages(caplog) == ["[saga=Order step=b status=failed error=Boom]"]


async def test_at_warning_level_a_completed_saga_logs_nothing(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog, logging.WARNING)

    await engine.run(saga_flow(journal.transaction("a"), step(journal.ok("b")) | Retry(2)), order)

    assert saga_messages(caplog) == []


async def test_a_timed_out_saga_logs_the_cut_step_and_its_status(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.hang("slow")).timeout(timedelta(milliseconds=5))

    await engine.run(flow, order, saga_name="Order")

    assert saga_lines(caplog)[-2:] == [
        ("WARNING", "[saga=Order step=slow status=failed error=SagaTimeoutError]"),
        ("INFO", "[saga=Order status=TIMED_OUT elapsed=0ms]"),
    ]


async def test_the_engine_can_run_without_log_lines(
    journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    await SagaEngine(log=False).run(saga_flow(journal.transaction("a"), journal.fail("b")), order)

    assert saga_messages(caplog) == []
