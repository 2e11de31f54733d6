"""OpenTelemetry for saga runs: a span per run, step attempt and compensation, and metrics.

`SagaTelemetryListener` is a listener on the event seam (extra `otel`, on `opentelemetry-api`
only: the application chooses and configures the SDK). A run's span is the parent of its steps'
and compensations' spans, and is current while the run goes on; a step attempt's span is
current while its action runs (and a compensation's while it runs), so the calls a step makes
(HTTP, database, messages) nest under it. Like every listener it can never change a run: its
own errors are reported once (`SagaListenerWarning`) and ignored.

Every span a run opens is ended by the end of the run: a step cut off by the saga timeout, or
by a cancellation (which gives it no end event of its own), is ended when the saga finishes or
aborts, marked `timed_out` or `cancelled`.
"""

from __future__ import annotations

import asyncio
import functools
import time
import warnings
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Final
from uuid import UUID

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode
    from opentelemetry.util.types import AttributeValue
except ImportError as missing:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "spakky_saga.otel needs the OpenTelemetry API, which is not installed: "
        "pip install 'spakky-saga-typed[otel]' (and an OpenTelemetry SDK to export with)"
    ) from missing

from spakky_saga._text import error_text, safe_repr, safe_str
from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaCompensationInterruptedError,
    SagaListenerWarning,
    SagaTimeoutError,
)
from spakky_saga.events import SagaEvent, SagaEventKind
from spakky_saga.listeners import SagaListener

SCOPE: Final = "spakky_saga"
"""The instrumentation scope of the tracer and the meter."""

# Attribute keys, on spans and metric points alike.
SAGA_NAME: Final = "saga.name"
SAGA_ID: Final = "saga.id"
SAGA_OUTCOME: Final = "saga.outcome"
SAGA_FAILED_STEP: Final = "saga.failed_step"
SAGA_RECOVERED: Final = "saga.recovered"
SAGA_WAITING_IN: Final = "saga.waiting_in"
STEP: Final = "saga.step"
STEP_KEY: Final = "saga.step.key"
STEP_ATTEMPT: Final = "saga.step.attempt"
STEP_RETRY_DELAY: Final = "saga.step.retry_delay"

DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
"""Histogram boundaries in seconds (the SDK's default ones are for milliseconds)."""

_RECOVERED_LIMIT: Final = 1024
"""How many runs without a `saga_started` (recovered sagas) are tracked at once, so that runs
that never report their end (a store error or a BaseException ends `recover()`'s run without
`saga_aborted`) cannot pile up: the oldest is ended, `abandoned`."""


class _Open:
    """A span a run opened for a step attempt or a compensation, and the context made current
    for it (detached in the task that attached it)."""

    __slots__ = ("attempt", "key", "span", "started", "step", "task", "token")

    def __init__(
        self, span: Span, token: Token[Context] | None, step: str, key: str, attempt: int
    ) -> None:
        self.span = span
        self.token = token
        self.task = _current_task()
        self.step = step
        self.key = key
        self.attempt = attempt
        self.started = time.perf_counter()


class _Failed:
    """A failed attempt whose span waits for the strategy's verdict (retrying, skipped): the
    engine reports it right after the failure, in the same task, before anything else."""

    __slots__ = ("at", "elapsed", "open")

    def __init__(self, open_: _Open, elapsed: float) -> None:
        self.open = open_
        self.at = time.time_ns()
        self.elapsed = elapsed


class _RunSpans:
    """Everything one run has open; found through a context variable of the listener, so
    that two runs never share it, even two concurrent runs of the same data (same saga id)."""

    __slots__ = (
        "attributes",
        "compensations",
        "context",
        "cut",
        "failed",
        "saga_id",
        "saga_name",
        "span",
        "steps",
        "task",
        "tokens",
    )

    def __init__(self, saga_id: UUID, saga_name: str, span: Span, context: Context) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self.span = span
        self.context = context
        """The parent of the run's step and compensation spans."""
        self.attributes: dict[str, AttributeValue] = {
            SAGA_NAME: saga_name,
            SAGA_ID: str(saga_id),
        }
        self.steps: dict[tuple[str, int], _Open] = {}
        self.compensations: dict[str, _Open] = {}
        self.failed: _Failed | None = None
        self.cut: list[_Open] = []
        """Step spans ended while their context was current in another task: detached at the
        end of the run, if that is the run's task."""
        self.task = _current_task()
        self.tokens: tuple[Token[Context], Token[_RunSpans | None]] | None = None
        """Set when the run's span was made current (at saga_started): undone at its end."""


_VERDICTS: Final = frozenset({SagaEventKind.STEP_RETRYING, SagaEventKind.STEP_SKIPPED})
"""What the engine may report right after a failed attempt, about that attempt."""

type _Handler = Callable[[SagaTelemetryListener, SagaEvent], None]


def _contained(handler: _Handler) -> _Handler:
    """An event handler whose errors are reported once and never reach the engine."""

    @functools.wraps(handler)
    def contained(self: SagaTelemetryListener, event: SagaEvent) -> None:
        try:
            handler(self, event)
        except Exception as error:
            self._report(handler.__name__, error)

    return contained


class SagaTelemetryListener(SagaListener):
    """Traces and measures saga runs with OpenTelemetry.

    Spans (all INTERNAL): `saga <saga name>` per run, `saga step <step>` per step attempt and
    `saga compensation <step>` per compensation, with the attributes `saga.name`, `saga.id`,
    `saga.step`, `saga.step.key`, `saga.step.attempt` and `saga.outcome`. Metrics:
    `saga.runs` and `saga.compensations` (counters), `saga.duration` and `saga.step.duration`
    (histograms, seconds). `tracer_provider` / `meter_provider` default to the global ones
    (pass `NoOpMeterProvider()` to trace only, or `NoOpTracerProvider()` to measure only).
    """

    __slots__ = (
        "_compensations",
        "_current",
        "_recovered",
        "_reported",
        "_run_duration",
        "_runs",
        "_step_duration",
        "_tracer",
    )

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        from spakky_saga import __version__  # noqa: PLC0415 - the package imports listeners

        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._runs = meter.create_counter(
            "saga.runs", "{run}", "Saga runs that ended, by saga name and outcome"
        )
        self._compensations = meter.create_counter(
            "saga.compensations",
            "{compensation}",
            "Compensations that ended, by saga name, step and outcome",
        )
        self._run_duration = meter.create_histogram(
            "saga.duration",
            "s",
            "How long saga runs took, by saga name and outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._step_duration = meter.create_histogram(
            "saga.step.duration",
            "s",
            "How long step attempts took, by saga name, step and outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._current: ContextVar[_RunSpans | None] = ContextVar(
            f"spakky_saga_otel_{id(self):x}", default=None
        )
        self._recovered: dict[UUID, _RunSpans] = {}
        self._reported = False

    def __repr__(self) -> str:
        return "SagaTelemetryListener()"

    # --- the run ------------------------------------------------------------------------------

    @_contained
    def saga_started(self, event: SagaEvent) -> None:
        self._start_run(event, {SAGA_NAME: event.saga_name, SAGA_ID: str(event.saga_id)})

    @_contained
    def saga_recovered(self, event: SagaEvent) -> None:
        """A run of `recover()`: its span is current in the recovering task, as a run's is."""
        attributes: dict[str, str | bool] = {
            SAGA_NAME: event.saga_name,
            SAGA_ID: str(event.saga_id),
            SAGA_RECOVERED: True,
        }
        self._start_run(event, attributes)

    def _start_run(self, event: SagaEvent, attributes: dict[str, str | bool]) -> None:
        span = self._tracer.start_span(f"saga {event.saga_name}", attributes=attributes)
        context = trace.set_span_in_context(span)
        run = _RunSpans(event.saga_id, event.saga_name, span, context)
        run.tokens = (otel_context.attach(context), self._current.set(run))

    @_contained
    def saga_finished(self, event: SagaEvent) -> None:
        run = self._run(event)
        status = event.status
        outcome = "completed" if status is None else status.value.lower()
        span = run.span
        if event.step is not None:
            span.set_attribute(SAGA_FAILED_STEP, event.step)
        if outcome != "completed":
            description = f"saga {outcome}"
            if event.step is not None:
                description += f' at step "{event.step}"'
            _fail(span, event.error, description)
        self._end_run(run, outcome, event)

    @_contained
    def saga_suspended(self, event: SagaEvent) -> None:
        """The run stops in a wait (WAITING in the store): its span ends, with the wait's; the
        run that resumes it has a span of its own (`saga_recovered`)."""
        run = self._run(event)
        if event.step is not None:
            run.span.set_attribute(SAGA_WAITING_IN, event.step)
        self._end_run(run, "waiting", event)

    @_contained
    def saga_aborted(self, event: SagaEvent) -> None:
        run = self._run(event)
        error = event.error
        if isinstance(error, SagaCompensationFailedError):
            outcome = "compensation_failed"
        elif isinstance(error, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = "aborted"
        _fail(run.span, error, f"saga {outcome}")
        self._end_run(run, outcome, event)

    # --- step attempts ------------------------------------------------------------------------

    @_contained
    def step_started(self, event: SagaEvent) -> None:
        run = self._run(event)
        step = event.step or "-"
        key = event.step_key or step
        attributes = run.attributes.copy()
        attributes[STEP] = step
        attributes[STEP_KEY] = key
        attributes[STEP_ATTEMPT] = event.attempt
        span = self._tracer.start_span(f"saga step {step}", run.context, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        run.steps[key, event.attempt] = _Open(span, token, step, key, event.attempt)

    @_contained
    def step_committed(self, event: SagaEvent) -> None:
        run = self._run(event)
        open_ = run.steps.pop((event.step_key or event.step or "-", event.attempt), None)
        if open_ is not None:
            _detach(open_)
            self._end_step(run, open_, "committed", event.elapsed_seconds)

    @_contained
    def step_failed(self, event: SagaEvent) -> None:
        run = self._run(event)
        key = event.step_key or event.step or "-"
        open_ = run.steps.pop((key, event.attempt), None)
        error = event.error
        if open_ is None:
            # No attempt of this key is open: a group's merge failed, the saga timeout cut a
            # group (its members' spans are open under their own keys) or a retry's backoff.
            if isinstance(error, SagaTimeoutError):
                prefix = key + "."
                for member_key in [k for k in run.steps if k[0].startswith(prefix)]:
                    member = run.steps.pop(member_key)
                    _fail(member.span, error, "cut off by the saga timeout")
                    self._end_step(run, member, "timed_out")
            return
        _detach(open_)
        if isinstance(error, SagaTimeoutError):
            _fail(open_.span, error, "cut off by the saga timeout")
            self._end_step(run, open_, "timed_out", event.elapsed_seconds)
            return
        if isinstance(error, asyncio.CancelledError):  # the engine's record of a cut attempt
            _fail(open_.span, None, "cut off: the saga was cancelled while it ran")
            self._end_step(run, open_, "cancelled", event.elapsed_seconds)
            return
        _fail(open_.span, error, f"step {open_.step} failed")
        run.failed = _Failed(open_, event.elapsed_seconds)  # retrying or skipped may follow

    @_contained
    def step_retrying(self, event: SagaEvent) -> None:
        run = self._run(event)
        failed = run.failed
        if failed is not None and failed.open.key == (event.step_key or event.step or "-"):
            run.failed = None
            failed.open.span.set_attribute(STEP_RETRY_DELAY, event.delay_seconds)
            self._end_step(run, failed.open, "retrying", failed.elapsed, failed.at)

    @_contained
    def step_skipped(self, event: SagaEvent) -> None:
        run = self._run(event)
        failed = run.failed
        if failed is not None and failed.open.key == (event.step_key or event.step or "-"):
            run.failed = None
            self._end_step(run, failed.open, "skipped", failed.elapsed, failed.at)

    # --- compensations ------------------------------------------------------------------------

    @_contained
    def compensation_started(self, event: SagaEvent) -> None:
        run = self._run(event)
        if run.steps:
            self._cut_steps(run, "cancelled", "cut off: the saga was cancelled while it ran")
        step = event.step or "-"
        key = event.step_key or step
        attributes = run.attributes.copy()
        attributes[STEP] = step
        attributes[STEP_KEY] = key
        span = self._tracer.start_span(
            f"saga compensation {step}", run.context, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        run.compensations[key] = _Open(span, token, step, key, 1)

    @_contained
    def compensation_done(self, event: SagaEvent) -> None:
        run = self._run(event)
        open_ = run.compensations.pop(event.step_key or event.step or "-", None)
        if open_ is not None:
            _detach(open_)
            self._end_compensation(run, open_, "compensated")

    @_contained
    def compensation_failed(self, event: SagaEvent) -> None:
        run = self._run(event)
        if run.steps:
            self._cut_steps(run, "cancelled", "cut off: the saga was cancelled while it ran")
        step = event.step or "-"
        key = event.step_key or step
        open_ = run.compensations.pop(key, None)
        if open_ is None:  # it never began: the rollback was cut off before it
            attributes = run.attributes.copy()
            attributes[STEP] = step
            attributes[STEP_KEY] = key
            span = self._tracer.start_span(
                f"saga compensation {step}", run.context, attributes=attributes
            )
            open_ = _Open(span, None, step, key, 1)
        else:
            _detach(open_)
        error = event.error
        interrupted = isinstance(error, SagaCompensationInterruptedError)
        _fail(open_.span, error, f"compensation of step {step} failed")
        self._end_compensation(run, open_, "interrupted" if interrupted else "failed")

    # --- bookkeeping --------------------------------------------------------------------------

    def _run(self, event: SagaEvent) -> _RunSpans:
        """The spans of `event`'s run; settles a failed attempt no retry or skip followed."""
        run = self._current.get()
        if run is None or run.saga_id != event.saga_id:
            run = self._recovered.get(event.saga_id) or self._recovered_run(event)
        failed = run.failed
        if failed is not None and event.kind not in _VERDICTS:
            run.failed = None
            self._end_step(run, failed.open, "failed", failed.elapsed, failed.at)
        return run

    def _recovered_run(self, event: SagaEvent) -> _RunSpans:
        """A run seen without its `saga_started`: a saga finished by `recover()`."""
        if len(self._recovered) >= _RECOVERED_LIMIT:  # one never reported its end: drop it
            oldest = next(iter(self._recovered.values()))
            self._end_run(oldest, "abandoned", None)
        span = self._tracer.start_span(
            f"saga {event.saga_name}",
            attributes={
                SAGA_NAME: event.saga_name,
                SAGA_ID: str(event.saga_id),
                SAGA_RECOVERED: True,
            },
        )
        run = _RunSpans(event.saga_id, event.saga_name, span, trace.set_span_in_context(span))
        self._recovered[event.saga_id] = run
        return run

    def _end_step(
        self,
        run: _RunSpans,
        open_: _Open,
        outcome: str,
        elapsed: float | None = None,
        end_time: int | None = None,
    ) -> None:
        open_.span.set_attribute(SAGA_OUTCOME, outcome)
        open_.span.end(end_time)
        if elapsed is None:
            elapsed = time.perf_counter() - open_.started
        self._step_duration.record(
            elapsed, {SAGA_NAME: run.saga_name, STEP: open_.step, SAGA_OUTCOME: outcome}
        )

    def _cut_steps(self, run: _RunSpans, outcome: str, description: str) -> None:
        """End the spans of the steps the run left running: the rollback began (or the run
        ended) without their end events, so a cancellation cut them off."""
        for open_ in reversed(run.steps.values()):
            _detach(open_)
            if open_.token is not None:
                run.cut.append(open_)
            _fail(open_.span, None, description)
            self._end_step(run, open_, outcome)
        run.steps.clear()

    def _end_compensation(self, run: _RunSpans, open_: _Open, outcome: str) -> None:
        open_.span.set_attribute(SAGA_OUTCOME, outcome)
        open_.span.end()
        self._compensations.add(
            1, {SAGA_NAME: run.saga_name, STEP: open_.step, SAGA_OUTCOME: outcome}
        )

    def _end_run(self, run: _RunSpans, outcome: str, event: SagaEvent | None) -> None:
        """End the run's span after whatever it still has open (steps cut off by the saga
        timeout or a cancellation), and undo what it made current, in this task. Without an
        `event` the run is abandoned: its end was never reported, and what it made current is
        left alone (undoing it now, out of order, would undo what came after)."""
        description = f"cut off: the saga ended ({outcome}) while it ran"
        if run.steps:
            cut = outcome if outcome in ("timed_out", "abandoned", "waiting") else "cancelled"
            self._cut_steps(run, cut, description)
        for open_ in reversed(run.compensations.values()):
            if event is not None:
                _detach(open_)
            _fail(open_.span, None, description)
            self._end_compensation(run, open_, "interrupted")
        run.compensations.clear()
        if event is not None:
            for open_ in reversed(run.cut):
                _detach(open_)
        run.cut.clear()
        if run.tokens is not None and event is not None and run.task is _current_task():
            otel_context.detach(run.tokens[0])
            self._current.reset(run.tokens[1])
        run.tokens = None
        self._recovered.pop(run.saga_id, None)
        run.span.set_attribute(SAGA_OUTCOME, outcome)
        run.span.end()
        attributes = {SAGA_NAME: run.saga_name, SAGA_OUTCOME: outcome}
        self._runs.add(1, attributes)
        if event is not None:
            self._run_duration.record(event.elapsed_seconds, attributes)

    def _report(self, where: str, error: Exception) -> None:
        if self._reported:
            return
        self._reported = True
        warnings.warn(
            SagaListenerWarning(
                f"{safe_repr(self)} raised {error_text(error)} in {where}(); telemetry of the "
                "run may be incomplete, and later errors of this listener are not reported "
                "again (observers never change a saga's run)"
            ),
            stacklevel=3,
        )


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a listener driven by hand
        return None


def _detach(open_: _Open) -> None:
    """Undo what `open_` made current, if this is the task that made it current (a task cut
    off before its end event took its context with it)."""
    token = open_.token
    if token is not None and open_.task is _current_task():
        open_.token = None
        otel_context.detach(token)


def _fail(span: Span, error: BaseException | None, description: str) -> None:
    """Mark `span` failed and record `error` on it (never raising for a hostile error)."""
    if error is not None:
        try:
            span.record_exception(error)
        except Exception:  # a __str__ that raises: record what we safely can
            span.add_event(
                "exception",
                {"exception.type": type(error).__qualname__, "exception.message": safe_str(error)},
            )
        description = f"{description}: {error_text(error)}"
    span.set_status(Status(StatusCode.ERROR, description))
