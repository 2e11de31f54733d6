"""The console's queries (`query`, `count_by_status`) on every store: filters, sorting, keyset
paging, counts per status, and filter values that stay values (never SQL)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from spakky_saga import (
    AuditEntry,
    PageCursor,
    SagaQuery,
    SagaQueryError,
    SagaSort,
    SagaStore,
    StoredStatus,
)
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.store import SagaUpdate, WaitingStore
from tests.stores.test_store_contract import a_record, an_event

_BASE = 1_700_000_000.0


async def _saga(
    store: SagaStore,
    saga_id: str,
    *,
    name: str = "Order",
    status: StoredStatus | None = None,
    release: bool = False,
) -> float:
    """Start a saga (and finish or release it); its creation time, as the store set it."""
    await store.begin(a_record(saga_id, name=name), [an_event(1, "saga_started")], 30)
    if status is not None or release:
        await store.append(
            saga_id,
            "engine-a",
            [an_event(2, "saga_finished")],
            SagaUpdate(status=status, release=release),
            30,
        )
    loaded = await store.load(saga_id)
    assert loaded is not None
    return loaded.created


def _queries(store: SagaStore) -> SagaConsoleStore:
    assert isinstance(store, SagaConsoleStore)
    return store


async def _ids(store: SagaStore, query: SagaQuery) -> list[str]:
    return [r.saga_id for r in (await _queries(store).query(query)).records]


async def test_every_store_answers_the_console_queries(store: SagaStore) -> None:
    assert isinstance(store, SagaConsoleStore)


async def test_filters_select_by_status_name_id_prefix_and_created_range(store: SagaStore) -> None:
    await _saga(store, "ord-1", status=StoredStatus.COMPLETED, release=True)
    second = await _saga(store, "ord-2", status=StoredStatus.COMPENSATION_FAILED, release=True)
    await _saga(store, "pay-1", name="Payment")
    fourth = await _saga(store, "ord-3")

    by_created = SagaQuery(sort=SagaSort.CREATED)
    assert await _ids(store, by_created) == ["ord-3", "pay-1", "ord-2", "ord-1"]
    running = dataclasses.replace(by_created, statuses=(StoredStatus.RUNNING,))
    assert await _ids(store, running) == ["ord-3", "pay-1"]
    assert await _ids(store, dataclasses.replace(by_created, names=("Payment",))) == ["pay-1"]
    assert await _ids(store, dataclasses.replace(by_created, id_prefix="ord-")) == [
        "ord-3",
        "ord-2",
        "ord-1",
    ]
    window = dataclasses.replace(by_created, created_from=second, created_to=fourth)
    assert await _ids(store, window) == ["pay-1", "ord-2"]
    recent = SagaQuery(updated_from=time.time() - 60, updated_to=time.time() + 60)
    assert len(await _ids(store, recent)) == 4
    assert await _ids(store, SagaQuery(updated_to=_BASE)) == []


async def test_counts_per_status_follow_every_filter_but_the_statuses(store: SagaStore) -> None:
    await _saga(store, "ord-1", status=StoredStatus.COMPLETED, release=True)
    await _saga(store, "ord-2", status=StoredStatus.COMPLETED, release=True)
    await _saga(store, "ord-3")
    await _saga(store, "pay-1", name="Payment")

    counts = await _queries(store).count_by_status(
        SagaQuery(statuses=(StoredStatus.COMPLETED,), names=("Order",))
    )
    assert counts == {StoredStatus.COMPLETED: 2, StoredStatus.RUNNING: 1}
    assert await _queries(store).count_by_status(SagaQuery()) == {
        StoredStatus.COMPLETED: 2,
        StoredStatus.RUNNING: 2,
    }


@pytest.mark.parametrize("descending", [True, False])
async def test_keyset_pages_walk_every_saga_once_in_order(
    store: SagaStore, descending: bool
) -> None:
    expected = [f"s{n}" for n in range(7)]  # created in this order
    for saga_id in expected:
        await _saga(store, saga_id)
    if descending:
        expected.reverse()

    seen: list[str] = []
    query = SagaQuery(sort=SagaSort.CREATED, descending=descending, limit=3)
    pages = 0
    while True:
        page = await _queries(store).query(query)
        pages += 1
        seen += [r.saga_id for r in page.records]
        if page.next is None:
            break
        query = dataclasses.replace(query, after=PageCursor.decode(page.next.encode()))
    assert seen == expected
    assert pages == 3


async def test_sorting_by_update_puts_the_latest_change_first(store: SagaStore) -> None:
    await _saga(store, "a")
    await _saga(store, "b")
    await store.append("a", "engine-a", [an_event(2, "step_started")], SagaUpdate(), 30)
    assert await _ids(store, SagaQuery()) == ["a", "b"]
    assert await _ids(store, SagaQuery(descending=False)) == ["b", "a"]


async def test_stale_keeps_unfinished_sagas_nobody_holds_a_live_lease_on(store: SagaStore) -> None:
    await _saga(store, "held")
    await _saga(store, "abandoned", release=True)
    await _saga(store, "done", status=StoredStatus.COMPLETED, release=True)
    assert await _ids(store, SagaQuery(stale_at=time.time())) == ["abandoned"]
    # an hour on, the live lease (30 s) has expired too
    assert sorted(await _ids(store, SagaQuery(stale_at=time.time() + 3600))) == [
        "abandoned",
        "held",
    ]


@pytest.mark.parametrize(
    "hostile", ["x' OR '1'='1", "%", "_", "ord'; DROP TABLE spakky_saga_sagas; --", "\\"]
)
async def test_filter_values_are_matched_as_text_never_run_as_sql(
    store: SagaStore, hostile: str
) -> None:
    await _saga(store, "ord-1")
    assert await _ids(store, SagaQuery(names=(hostile,))) == []
    assert await _ids(store, SagaQuery(id_prefix=hostile)) == []
    assert await _queries(store).count_by_status(SagaQuery(names=(hostile,))) == {}
    assert await _ids(store, SagaQuery()) == ["ord-1"]


async def test_an_id_prefix_matches_case_and_wildcards_exactly(store: SagaStore) -> None:
    await _saga(store, "Ord_1")
    await _saga(store, "ord%1")
    assert await _ids(store, SagaQuery(id_prefix="Ord_")) == ["Ord_1"]
    assert await _ids(store, SagaQuery(id_prefix="ord%")) == ["ord%1"]
    assert await _ids(store, SagaQuery(id_prefix="ORD")) == []


@pytest.mark.parametrize("text", ["", "12", "abc:s1", "nan:s1", "inf:s1"])
def test_a_cursor_no_page_gave_is_refused_with_a_way_out(text: str) -> None:
    with pytest.raises(SagaQueryError, match="start again from the first page"):
        PageCursor.decode(text)


@pytest.mark.parametrize("limit", [0, 501])
def test_a_page_size_out_of_range_is_refused(limit: int) -> None:
    with pytest.raises(SagaQueryError, match="a page holds 1 to 500 sagas"):
        SagaQuery(limit=limit)


async def test_operator_actions_are_kept_per_saga_oldest_first(store: SagaStore) -> None:
    console = _queries(store)
    later = AuditEntry("s1", _BASE + 2, "cancel", "alice", "10.0.0.7", "requested")
    earlier = AuditEntry("s1", _BASE + 1, "recover", "bob", "127.0.0.1", "compensated")
    await console.audit(later)
    await console.audit(earlier)
    await console.audit(AuditEntry("s2", _BASE, "recover", "bob", "::1", "refused"))
    assert await console.audit_trail("s1") == [earlier, later]
    assert await console.audit_trail("nobody") == []


def test_sagas_created_at_the_same_moment_are_paged_by_their_ids() -> None:
    first = a_record("b")
    tied = [dataclasses.replace(a_record(i), created=first.created) for i in ("c", "a")]
    query = SagaQuery(sort=SagaSort.CREATED, limit=1, after=PageCursor(first.created, "b"))
    assert [r.saga_id for r in tied if query.matches(r)] == ["a"]
    ascending = dataclasses.replace(query, descending=False)
    assert [r.saga_id for r in tied if ascending.matches(r)] == ["c"]


async def test_nodes_are_the_engines_holding_leases_with_their_last_renewal(
    store: SagaStore,
) -> None:
    await _saga(store, "held-1")
    await _saga(store, "held-2")
    await store.begin(a_record("other-1", owner="engine-b"), [an_event(1, "saga_started")], 30)
    await _saga(store, "done-1", status=StoredStatus.COMPLETED, release=True)
    before = time.time()
    await store.renew("engine-a", ["held-1", "held-2"], 60)
    nodes = await _queries(store).nodes()
    assert [(n.owner, n.sagas) for n in nodes] == [("engine-a", 2), ("engine-b", 1)]
    renewed_a, renewed_b = nodes[0].renewed, nodes[1].renewed
    assert renewed_a is not None
    assert renewed_a >= before - 1
    assert nodes[0].lease_expires >= renewed_a + 59
    assert renewed_b is None  # it took its lease and has not renewed it since


async def test_a_failures_traceback_round_trips_through_the_log(store: SagaStore) -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nBoom: <no>\n'
    failed = an_event(2, "step_failed")._replace(error_type="Boom", traceback=trace)
    await store.begin(a_record("tb-1"), [an_event(1, "saga_started")], 30)
    await store.append("tb-1", "engine-a", [failed], SagaUpdate(), 30)
    loaded = await store.load("tb-1")
    assert loaded is not None
    assert [e.traceback for e in loaded.events] == [None, trace]


async def test_wake_times_say_when_waiting_sagas_wake_earliest_first(store: SagaStore) -> None:
    queries = _queries(store)
    assert isinstance(queries, WaitingStore)
    now = time.time()
    for saga_id, wake_at in (("late", now + 3600), ("due", now - 60), ("signal-only", None)):
        await _saga(store, saga_id)
        await queries.suspend(saga_id, "engine-a", wake_at, 0)
    await _saga(store, "running")

    every = await queries.wake_times()
    chosen = await queries.wake_times(["late", "running", "signal-only"])
    due = await queries.wake_times(due_by=now)
    first = await queries.wake_times(limit=1)

    assert list(every) == ["due", "late"]
    assert every["late"] == pytest.approx(now + 3600)
    assert list(chosen) == ["late"]
    assert list(due) == ["due"]
    assert list(first) == ["due"]
