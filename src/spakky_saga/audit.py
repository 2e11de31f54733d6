"""What an operator did to a saga: an `AuditEntry` per console action (recover, retry
compensation, cancel), who did it, when, from where, and what came of it.

Entries live beside a saga's log, not in it: the log is the engine's, written by the lease
owner with gapless sequence numbers, and an operator acts from outside the lease. A store
keeps them after `purge` deletes the saga (an audit trail outlives what it audits)."""

from __future__ import annotations

from typing import NamedTuple


class AuditEntry(NamedTuple):
    """One operator action on one saga."""

    saga_id: str
    at: float
    """When (epoch seconds)."""
    action: str
    """What was asked: "recover", "retry_compensation", "cancel"."""
    by: str
    """Who: the authenticated operator's name."""
    origin: str
    """From where: the client's address as the console saw it."""
    outcome: str
    """What came of it, in words (the outcome recovery reported, or why it was refused)."""
