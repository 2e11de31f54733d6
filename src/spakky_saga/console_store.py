"""What the operations console asks of a store beyond `SagaStore`: list pages and counts per
status (`query`, `count_by_status`), the audit trail of operator actions (`audit`,
`audit_trail`), the engines holding leases (`nodes`, `EngineNode`) and when WAITING sagas
wake (`wake_times`). InMemorySagaStore,
SqliteSagaStore and PostgresSagaStore implement it; a store of one's own needs it to be shown
in the console."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from spakky_saga.audit import AuditEntry
from spakky_saga.query import SagaPage, SagaQuery
from spakky_saga.store import SagaStore, StoredStatus


class EngineNode(NamedTuple):
    """An engine (its owner name) holding leases on unfinished sagas, as the store knows it."""

    owner: str
    sagas: int
    """How many unfinished sagas it holds a lease on."""
    lease_expires: float
    """When the latest of those leases runs out (epoch seconds)."""
    renewed: float | None
    """When its heartbeat last renewed its leases (None: not since it took them)."""


@runtime_checkable
class SagaConsoleStore(SagaStore, Protocol):
    """A `SagaStore` with the console's queries and audit trail (see the module)."""

    async def query(self, query: SagaQuery) -> SagaPage:
        """One page of the sagas `query` selects, in its order, without their logs."""
        ...

    async def count_by_status(self, query: SagaQuery) -> dict[StoredStatus, int]:
        """How many sagas of each status pass `query`'s filters but its statuses (cursor,
        sort and limit ignored); statuses with none are left out."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Record an operator's action on a saga."""
        ...

    async def audit_trail(self, saga_id: str) -> list[AuditEntry]:
        """The actions recorded on a saga, oldest first."""
        ...

    async def nodes(self) -> list[EngineNode]:
        """The engines holding a lease on an unfinished saga (live or expired), by name."""
        ...

    async def wake_times(
        self, saga_ids: Sequence[str] = (), *, due_by: float | None = None, limit: int = 100
    ) -> dict[str, float]:
        """When WAITING sagas wake (epoch seconds: a wait's deadline, a sleep's end, or now
        for one a signal or a cancel request woke), earliest first, at most `limit`: among
        `saga_ids` when given, only those due by `due_by` when given. A WAITING saga that
        only a signal wakes has none, and is left out."""
        ...
