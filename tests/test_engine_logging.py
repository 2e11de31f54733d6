"""Structured logs: `[saga=NAME step=STEP status=... elapsed=Nms]` for step start, completion,
failure, retry (with the attempt), compensation, and the saga's own start and end."""

from __future__ import annotations

import logging
import re
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

LINE = re.compile(r"^\[saga=\S+ step=\S+ status=[a-z_]+ elapsed=\d+\.\d{3}ms\]")


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    capture_saga_logs(caplog)


async def test_a_completed_saga_logs_start_each_step_and_end(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.ok("issue", takes=0.25), journal.ok("reserve", takes=0.0015))

    await engine.run(flow, order, saga_name="Order")

    assert saga_messages(caplog) == [
        "[saga=Order step=- status=started elapsed=0.000ms]",
        "[saga=Order step=issue status=started elapsed=0.000ms]",
        "[saga=Order step=issue status=completed elapsed=250.000ms]",
        "[saga=Order step=reserve status=started elapsed=0.000ms]",
        "[saga=Order step=reserve status=completed elapsed=1.500ms]",
        "[saga=Order step=- status=completed elapsed=251.500ms]",
    ]


async def test_a_failed_saga_logs_the_failure_compensation_and_end(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.transaction("issue", takes=0.002), journal.fail("charge"))

    await engine.run(flow, order, saga_name="Order")

    assert saga_messages(caplog) == [
        "[saga=Order step=- status=started elapsed=0.000ms]",
        "[saga=Order step=issue status=started elapsed=0.000ms]",
        "[saga=Order step=issue status=completed elapsed=2.000ms]",
        "[saga=Order step=charge status=started elapsed=0.000ms]",
        "[saga=Order step=charge status=failed elapsed=0.000ms] attempt=1 "
        "error=Boom('charge failed')",
        "[saga=Order step=issue status=compensating elapsed=0.000ms]",
        "[saga=Order step=issue status=compensated elapsed=0.000ms]",
        "[saga=Order step=- status=failed elapsed=2.000ms] failed_step=charge "
        "error=Boom('charge failed')",
    ]


async def test_a_retry_logs_each_failed_attempt_and_the_next_attempt(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    retry = Retry(3, ExponentialBackoff(0.5))

    await engine.run(saga_flow(step(journal.fail("pay", times=2), on_error=retry)), order)

    assert saga_messages(caplog)[1:-1] == [
        "[saga=saga step=pay status=started elapsed=0.000ms] attempt=1",
        "[saga=saga step=pay status=failed elapsed=0.000ms] attempt=1 error=Boom('pay failed')",
        "[saga=saga step=pay status=retry elapsed=0.000ms] attempt=2 delay=0.500s",
        "[saga=saga step=pay status=started elapsed=0.000ms] attempt=2",
        "[saga=saga step=pay status=failed elapsed=0.000ms] attempt=2 error=Boom('pay failed')",
        "[saga=saga step=pay status=retry elapsed=0.000ms] attempt=3 delay=1.000s",
        "[saga=saga step=pay status=started elapsed=0.000ms] attempt=3",
        "[saga=saga step=pay status=completed elapsed=0.000ms]",
    ]


async def test_a_skipped_step_is_logged_as_skipped(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.run(saga_flow(step(journal.fail("notify"), on_error=Skip())), order)

    skipped = [r for r in caplog.records if "status=skipped" in r.getMessage()]
    assert [r.getMessage() for r in skipped] == [
        "[saga=saga step=notify status=skipped elapsed=0.000ms]"
    ]
    assert skipped[0].levelno == logging.WARNING


async def test_a_failed_compensation_is_logged_as_an_error(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(step(journal.ok("a"), compensate=journal.undo_fail("a")), journal.fail("b"))

    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, order)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "[saga=saga step=a status=compensation_failed elapsed=0.000ms] compensation=undo_a "
        "error=Boom('undo a failed')"
    ]


async def test_every_line_follows_the_documented_format_on_spakky_saga_loggers(
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
    assert all(LINE.match(r.getMessage()) for r in records), [r.getMessage() for r in records]
    assert {r.name for r in records} == {"spakky_saga.engine"}


async def test_at_warning_level_a_failed_saga_logs_one_line(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog, logging.WARNING)
    flow = saga_flow(journal.transaction("a"), journal.fail("b"))

    await engine.run(flow, order, saga_name="Order")

    assert saga_messages(caplog) == [
        "[saga=Order step=- status=failed elapsed=0.000ms] failed_step=b error=Boom('b failed')"
    ]


async def test_at_warning_level_a_completed_saga_logs_nothing(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    capture_saga_logs(caplog, logging.WARNING)

    await engine.run(saga_flow(journal.transaction("a"), step(journal.ok("b")) | Retry(2)), order)

    assert saga_messages(caplog) == []


async def test_a_timed_out_saga_logs_its_status_and_running_step(
    engine: SagaEngine, journal: Journal, order: OrderData, caplog: pytest.LogCaptureFixture
) -> None:
    flow = saga_flow(journal.hang("slow")).timeout(timedelta(milliseconds=5))

    await engine.run(flow, order, saga_name="Order")

    assert saga_messages(caplog)[-1].startswith(
        "[saga=Order step=- status=timed_out elapsed=0.000ms] failed_step=slow "
        "error=SagaTimeoutError("
    )
