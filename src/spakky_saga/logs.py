"""The engine's log lines: one listener on the event seam.

The text and level of every line are those of the documented package
(`[saga=NAME step=STEP status=... elapsed=Nms]`), so log searches and alerts written for it
keep working. A failed compensation is logged at ERROR instead of WARNING (the data may be
inconsistent: docs/compatibility.md). What we know beyond the documented text (saga id,
attempt, precise elapsed time, the error's message, the retry delay) goes into structured
fields on the record (`extra=`), all prefixed `saga_`, so JSON log handlers see it while the
text stays the same.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from spakky_saga._text import safe_str
from spakky_saga.events import SagaEvent
from spakky_saga.listeners import SagaListener
from spakky_saga.status import SagaStatus

ENGINE_LOGGER: Final = logging.getLogger("spakky_saga.engine")


class SagaLogListener(SagaListener):
    """Writes the documented log lines of every run to a logger (`spakky_saga.engine`)."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger = ENGINE_LOGGER) -> None:
        self._logger = logger

    def __repr__(self) -> str:
        return f"SagaLogListener({self._logger.name!r})"

    def wants_progress(self) -> bool:
        """Progress lines are INFO: with the logger above INFO, successful runs pay nothing."""
        return self._logger.isEnabledFor(logging.INFO)

    def saga_started(self, event: SagaEvent) -> None:
        self._log(logging.INFO, "[saga=%s status=started]", (event.saga_name,), event)

    def saga_recovered(self, event: SagaEvent) -> None:
        self._log(logging.INFO, "[saga=%s status=recovered]", (event.saga_name,), event)

    def step_started(self, event: SagaEvent) -> None:
        if event.attempt == 1:  # a retry announces itself with its `retry` line instead
            self._log(
                logging.INFO,
                "[saga=%s step=%s status=started]",
                (event.saga_name, event.step),
                event,
            )

    def step_committed(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s step=%s status=completed elapsed=%.0fms]",
            (event.saga_name, event.step, event.elapsed_seconds * 1e3),
            event,
        )

    def step_failed(self, event: SagaEvent) -> None:
        self._log(
            logging.WARNING,
            "[saga=%s step=%s status=failed error=%s]",
            (event.saga_name, event.step, _error_name(event.error)),
            event,
        )

    def step_retrying(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s step=%s status=retry attempt=%d]",
            (event.saga_name, event.step, event.attempt),
            event,
        )

    def compensation_started(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s step=%s status=compensating]",
            (event.saga_name, event.step),
            event,
        )

    def compensation_done(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s step=%s status=compensated elapsed=%.0fms]",
            (event.saga_name, event.step, event.elapsed_seconds * 1e3),
            event,
        )

    def compensation_failed(self, event: SagaEvent) -> None:
        self._log(
            logging.ERROR,
            "[saga=%s step=%s status=failed error=%s]",
            (event.saga_name, event.step, _error_name(event.error)),
            event,
            compensation=True,
        )

    def compensation_retrying(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s step=%s status=compensation_retry attempt=%d]",
            (event.saga_name, event.step, event.attempt),
            event,
            compensation=True,
        )

    def saga_finished(self, event: SagaEvent) -> None:
        assert event.status is not None, "the engine sets status on SAGA_FINISHED"
        if event.status is SagaStatus.STUCK:
            self._log(
                logging.ERROR,
                "[saga=%s status=STUCK step=%s error=%s elapsed=%.0fms] a step failed for good "
                "after the pivot; nothing was compensated: an operator must finish this saga",
                (
                    event.saga_name,
                    event.step,
                    _error_name(event.error),
                    event.elapsed_seconds * 1e3,
                ),
                event,
            )
            return
        self._log(
            logging.INFO,
            "[saga=%s status=%s elapsed=%.0fms]",
            (event.saga_name, event.status.value, event.elapsed_seconds * 1e3),
            event,
        )

    def step_escalated(self, event: SagaEvent) -> None:
        self._log(
            logging.WARNING,
            "[saga=%s step=%s status=escalated error=%s] waiting for an operator's decision: "
            "engine.resolve(saga_id, 'retry' | 'skip' | 'compensate', by=...) or "
            "spakky-saga resolve",
            (event.saga_name, event.step, _error_name(event.error)),
            event,
        )

    def saga_suspended(self, event: SagaEvent) -> None:
        self._log(
            logging.INFO,
            "[saga=%s status=WAITING step=%s elapsed=%.0fms] suspended in the store until its "
            "signal or time",
            (event.saga_name, event.step, event.elapsed_seconds * 1e3),
            event,
        )

    def saga_aborted(self, event: SagaEvent) -> None:
        self._log(
            logging.WARNING,
            "[saga=%s status=aborted error=%s elapsed=%.0fms]",
            (event.saga_name, _error_name(event.error), event.elapsed_seconds * 1e3),
            event,
        )

    def _log(
        self,
        level: int,
        text: str,
        args: tuple[Any, ...],
        event: SagaEvent,
        *,
        compensation: bool = False,
    ) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "saga_event": event.kind.value,
            "saga_name": event.saga_name,
            "saga_id": event.saga_id,
            "saga_step": event.step,
            "saga_attempt": event.attempt,
            "saga_elapsed_ms": event.elapsed_seconds * 1e3,
            "saga_offset_ms": event.offset_seconds * 1e3,
            "saga_compensation": compensation,
        }
        if event.error is not None:
            extra["saga_error"] = _error_name(event.error)
            extra["saga_error_message"] = safe_str(event.error)
        if event.delay_seconds:
            extra["saga_delay_s"] = event.delay_seconds
        if event.status is not None:
            extra["saga_status"] = event.status.value
        logger.log(level, text, *args, extra=extra)


def _error_name(error: BaseException | None) -> str:
    return "-" if error is None else type(error).__name__
