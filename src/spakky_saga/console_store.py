"""What the operations console asks of a store beyond `SagaStore`: list pages and counts per
status (`query`, `count_by_status`) and the audit trail of operator actions (`audit`,
`audit_trail`). InMemorySagaStore, SqliteSagaStore and PostgresSagaStore implement it; a
store of one's own needs it to be shown in the console."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from spakky_saga.audit import AuditEntry
from spakky_saga.query import SagaPage, SagaQuery
from spakky_saga.store import SagaStore, StoredStatus


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
