"""How an operator cancels a saga (`spakky-saga cancel`, the console's Cancel): the request is
recorded in the store (`request_cancel`: who, when), then an engine on the store takes the
saga and compensates it at once if nobody runs it (its engine died, or it waits suspended:
the request woke it); a saga whose engine is alive is left to that engine, which reads the
request when it renews its lease. One body for both tools, so they cannot drift."""

from __future__ import annotations

from typing import NamedTuple

from spakky_saga.engine import SagaEngine
from spakky_saga.recovery import RecoveredSaga
from spakky_saga.store import SIGNALLED, SagaRecord, SagaStore


class Cancellation(NamedTuple):
    """What `cancel` did: the saga as the request left it (None: no such saga) and, when an
    engine took it and finished it here, how (`RecoveredSaga`)."""

    record: SagaRecord | None
    recovered: RecoveredSaga | None = None

    @property
    def refused(self) -> bool:
        """No such saga, or one neither RUNNING nor WAITING: nothing was requested."""
        return self.record is None or self.record.status not in SIGNALLED


async def cancel(
    store: SagaStore, saga_id: str, by: str, engine: SagaEngine | None
) -> Cancellation:
    """Ask to cancel saga `saga_id` as `by` (user@host), and with `engine` (on `store`, the
    saga's flow registered) compensate it now if no live engine holds it."""
    record = await store.request_cancel(saga_id, by)
    done = Cancellation(record)
    if done.refused or engine is None:
        return done
    report = await engine.recover(saga_ids=[saga_id], limit=1)
    return done if not report.sagas else Cancellation(record, report.sagas[0])
