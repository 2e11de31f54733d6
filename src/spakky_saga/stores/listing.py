"""A `SagaQuery` as SQL, for both SQL stores: one statement builder, with the store's own
placeholder (`?` for SQLite, `%s` for PostgreSQL), so the two never drift. Every value a
query holds (statuses, names, times, the id prefix, the cursor) goes out as a parameter;
only column names the builder itself chose are part of the text."""

from __future__ import annotations

from collections.abc import Sequence

from spakky_saga.query import SagaQuery
from spakky_saga.store import UNFINISHED, StoredStatus


def _where(query: SagaQuery, mark: str, *, statuses: bool) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []

    def any_of(column: str, values: tuple[str, ...]) -> None:
        clauses.append(f"{column} IN ({', '.join([mark] * len(values))})")
        params.extend(values)

    if statuses and query.statuses:
        any_of("status", tuple(s.value for s in query.statuses))
    if query.names:
        any_of("saga_name", query.names)
    if query.id_prefix:
        clauses.append(f"substr(saga_id, 1, {mark}) = {mark}")
        params.extend((len(query.id_prefix), query.id_prefix))
    for column, start, end in (
        ("updated", query.updated_from, query.updated_to),
        ("created", query.created_from, query.created_to),
    ):
        if start is not None:
            clauses.append(f"{column} >= {mark}")
            params.append(start)
        if end is not None:
            clauses.append(f"{column} < {mark}")
            params.append(end)
    if query.stale_at is not None:
        any_of("status", tuple(s.value for s in UNFINISHED))
        clauses.append(f"(owner IS NULL OR lease_expires < {mark})")
        params.append(query.stale_at)
    return " AND ".join(clauses), params


def page_statement(
    query: SagaQuery, table: str, columns: str, mark: str
) -> tuple[str, list[object]]:
    """The statement selecting `query`'s page and one row more (to know whether more follow)."""
    where, params = _where(query, mark, statuses=True)
    order = query.sort.value
    if query.after is not None:
        where += " AND " if where else ""
        where += f"({order}, saga_id) {'<' if query.descending else '>'} ({mark}, {mark})"
        params.extend(query.after)
    direction = "DESC" if query.descending else "ASC"
    ordered = f"ORDER BY {order} {direction}, saga_id {direction}"
    # The page's ids first (a sort of narrow rows, or an index read), then their rows: the
    # wide columns (the data) are read for the page only, never for every row sorted.
    statement = (
        f"SELECT {columns} FROM {table} WHERE saga_id IN (SELECT saga_id FROM {table}"
        f"{' WHERE ' + where if where else ''} {ordered} LIMIT {mark}) {ordered}"
    )
    return statement, [*params, query.limit + 1]


def count_statement(query: SagaQuery, table: str, mark: str) -> tuple[str, list[object]]:
    """The statement counting `query`'s sagas per status (its statuses, cursor, limit aside)."""
    where, params = _where(query, mark, statuses=False)
    return (
        f"SELECT status, count(*) FROM {table}{' WHERE ' + where if where else ''} GROUP BY status",
        params,
    )


def nodes_statement(sagas: str, nodes: str, mark: str) -> tuple[str, list[object]]:
    """The statement listing the engines holding leases on unfinished sagas (`EngineNode`'s
    columns), on the status index, with when each last renewed."""
    statement = (
        f"SELECT s.owner, count(*), max(s.lease_expires), max(n.renewed) FROM {sagas} AS s "
        f"LEFT JOIN {nodes} AS n ON n.owner = s.owner "
        f"WHERE s.status IN ({mark}, {mark}) AND s.owner IS NOT NULL "
        "GROUP BY s.owner ORDER BY s.owner"
    )
    return statement, [s.value for s in UNFINISHED]


def wake_statement(
    table: str, mark: str, saga_ids: Sequence[str], due_by: float | None, limit: int
) -> tuple[str, list[object]]:
    """The statement selecting (saga_id, wake_at) of WAITING sagas with a wake-up time (among
    `saga_ids` when given; due by `due_by` when given), earliest first, at most `limit`: on
    the (status, wake_at) index."""
    clauses = [f"status = {mark}", "wake_at IS NOT NULL"]
    params: list[object] = [StoredStatus.WAITING.value]
    if saga_ids:
        clauses.append(f"saga_id IN ({', '.join([mark] * len(saga_ids))})")
        params.extend(saga_ids)
    if due_by is not None:
        clauses.append(f"wake_at <= {mark}")
        params.append(due_by)
    statement = (
        f"SELECT saga_id, wake_at FROM {table} WHERE {' AND '.join(clauses)} "
        f"ORDER BY wake_at, saga_id LIMIT {mark}"
    )
    return statement, [*params, limit]
