"""What an operator asks a store for: a page of sagas (`SagaQuery`, `SagaPage`), which
`SagaConsoleStore.query` answers.

A query filters (statuses, saga names, an updated or created time range, a saga id prefix,
"stale": unfinished with nobody holding a live lease), sorts by when a saga was updated or
created (newest or oldest first; the saga id breaks ties) and pages by keyset: a page's
`next` cursor is the last row's sort value and saga id, so the next page starts after it
without counting the rows before it (as fast on page 1,000 as on page 1). The SQL stores run
it with parameters only, on the indexes their schema version 3 added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from spakky_saga.errors import SagaStoreError
from spakky_saga.store import UNFINISHED, SagaRecord, StoredStatus


class SagaQueryError(SagaStoreError, ValueError):
    """A query the store cannot run: a page cursor that is not one a page gave, a limit out of
    range. Also a `ValueError`: it is found before the store is asked."""

    message = "That saga query is not valid"


MAX_PAGE: int = 500
"""The largest page a query may ask for."""


class SagaSort(Enum):
    """What a query's sagas are ordered by (each a column the SQL stores index)."""

    UPDATED = "updated"
    CREATED = "created"


class PageCursor(NamedTuple):
    """Where a page ended: its last saga's sort value and id; the next page starts after it."""

    value: float
    saga_id: str

    def encode(self) -> str:
        """As a URL parameter: `repr` of the float (exact round trip), a colon, the id."""
        return f"{self.value!r}:{self.saga_id}"

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        value, colon, saga_id = text.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not colon or number != number or number in (float("inf"), float("-inf")):  # noqa: PLR0124 - nan
            raise SagaQueryError(
                f"page cursor {text!r} is not one a page of sagas gave (NUMBER:SAGA_ID); "
                "start again from the first page"
            )
        return cls(number, saga_id)


@dataclass(frozen=True, slots=True)
class SagaQuery:
    """A page of sagas to list; every filter left empty (or None) matches every saga.

    Times are epoch seconds: `*_from` inclusive, `*_to` exclusive. `stale_at` keeps only the
    unfinished sagas nobody holds a live lease on at that time (no owner, or a lease expired
    before it): what a dead engine left and nothing is recovering."""

    statuses: tuple[StoredStatus, ...] = ()
    names: tuple[str, ...] = ()
    id_prefix: str = ""
    updated_from: float | None = None
    updated_to: float | None = None
    created_from: float | None = None
    created_to: float | None = None
    stale_at: float | None = None
    sort: SagaSort = SagaSort.UPDATED
    descending: bool = True
    limit: int = 50
    after: PageCursor | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise SagaQueryError(
                f"limit {self.limit}: a page holds 1 to {MAX_PAGE} sagas; ask for fewer and "
                "follow the page's `next` cursor"
            )

    def sort_value(self, record: SagaRecord) -> float:
        return record.updated if self.sort is SagaSort.UPDATED else record.created

    def matches(self, record: SagaRecord, *, statuses: bool = True) -> bool:
        """Whether `record` passes every filter (`statuses=False`: every filter but the
        statuses, as counts per status are taken) and comes after the cursor."""
        if statuses and self.statuses and record.status not in self.statuses:
            return False
        if self.names and record.saga_name not in self.names:
            return False
        if not record.saga_id.startswith(self.id_prefix):
            return False
        if not _within(record.updated, self.updated_from, self.updated_to):
            return False
        if not _within(record.created, self.created_from, self.created_to):
            return False
        if self.stale_at is not None and not (
            record.status in UNFINISHED
            and (
                record.owner is None
                or (record.lease_expires is not None and record.lease_expires < self.stale_at)
            )
        ):
            return False
        if self.after is None:
            return True
        key = (self.sort_value(record), record.saga_id)
        return key < self.after if self.descending else key > self.after

    def page(self, records: Sequence[SagaRecord], more: bool) -> SagaPage:
        """The page of `records` (at most `limit`), with a cursor when `more` follow."""
        rows = list(records[: self.limit])
        last = rows[-1] if rows and more else None
        cursor = None if last is None else PageCursor(self.sort_value(last), last.saga_id)
        return SagaPage(rows, cursor)


def _within(value: float, start: float | None, end: float | None) -> bool:
    return (start is None or value >= start) and (end is None or value < end)


@dataclass(frozen=True, slots=True)
class SagaPage:
    """A page of sagas (without their logs) and where the next one starts (None: the last)."""

    records: list[SagaRecord]
    next: PageCursor | None
