"""A saga's page, second part: each error with its type, message and traceback; the flow with
this run's path marked; the data as highlighted JSON (escaped); the idempotency keys the
steps saw; sagas whose flow changed in "needs attention"; the nodes view."""

from __future__ import annotations

import dataclasses
import re

import pytest

from spakky_saga import (
    InMemorySagaStore,
    SagaCompensationFailedError,
    SagaEngine,
    StoredStatus,
    saga_flow,
    step,
)
from spakky_saga.console import create_console_app
from spakky_saga.console.flowchart import flow_items
from spakky_saga.console.highlight import highlight_json
from spakky_saga.store import SagaUpdate, StoredEvent
from tests.console.test_console_app import REMOTE, TOKEN, client, logged_in
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines
from tests.stores.test_store_contract import a_record, an_event

HOSTILE = "<script>alert('owned')</script>"


def _marks(page: str) -> dict[str, str]:
    """The flow diagram's boxes: step name -> mark."""
    return dict(re.findall(r'data-step="([^"]*)" data-mark="([^"]*)"', page))


async def reserve(data: Ticket) -> None:
    return None


async def release(data: Ticket) -> None:
    raise ConnectionError("stock service down")


async def charge(data: Ticket) -> None:
    raise ValueError(f"card declined {HOSTILE}")


async def ship(data: Ticket) -> None:
    return None


async def _failed_rollback_page() -> str:
    """The page of a saga whose charge failed (hostile text) and whose release failed too."""
    store = InMemorySagaStore()
    flow = saga_flow(step(reserve, compensate=release), charge, ship)
    engine, _ = engines(store, flow)
    data = Ticket(order_id=1)
    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, data, saga_name="order")
    await engine.aclose()
    async with client(create_console_app(store, token=TOKEN)) as browser:
        return (await browser.get(f"/sagas/{data.saga_id}")).text


async def test_each_error_shows_its_type_message_and_traceback_escaped() -> None:
    page = await _failed_rollback_page()

    errors = page.split("<h2>Errors</h2>")[1].split("<h2>Data</h2>")[0]
    assert '<strong class="error-type">ValueError</strong> in charge, attempt 1' in errors
    assert '<strong class="error-type">ConnectionError</strong> in undo reserve' in errors
    assert "card declined &lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in errors
    assert "<script>alert" not in page
    tracebacks = re.findall(r"<summary>Traceback</summary><pre>(.*?)</pre>", errors, re.S)
    assert len(tracebacks) == 2
    assert tracebacks[0].startswith("Traceback (most recent call last):")
    assert "in charge" in tracebacks[0]
    assert "raise ValueError(f&#34;card declined {HOSTILE}&#34;)" in tracebacks[0]
    assert "in release" in tracebacks[1]


async def test_the_flow_is_drawn_with_this_runs_path_marked() -> None:
    page = await _failed_rollback_page()
    assert _marks(page) == {
        "reserve": "compensation-failed",
        "charge": "failed",
        "ship": "not-run",
    }
    assert "undo: release" in page


def _event(seq: int, kind: str, key: str, step: str, attempt: int = 1) -> StoredEvent:
    return StoredEvent(seq, kind, float(seq), key, step, attempt)


def test_the_path_marks_retries_skips_groups_compensations_and_attempts_in_doubt() -> None:
    structure = (
        '[{"key":"1","step":"reserve","compensation":"release"},'
        '{"key":"2","group":[{"key":"2.1","step":"email","compensation":null},'
        '{"key":"2.2","step":"charge","compensation":"refund"}],"pivot":true},'
        '{"key":"3","step":"ship","compensation":null}]'
    )
    events = [
        _event(1, "step_started", "1", "reserve"),
        _event(2, "step_committed", "1", "reserve"),
        _event(3, "step_started", "2.1", "email"),
        _event(4, "step_failed", "2.1", "email"),
        _event(5, "step_skipped", "2.1", "email"),
        _event(6, "step_started", "2.2", "charge"),
        _event(7, "step_failed", "2.2", "charge"),
        _event(7, "step_retrying", "2.2", "charge", attempt=2),
        _event(8, "step_started", "2.2", "charge", attempt=2),
        _event(9, "step_committed", "2.2", "charge", attempt=2),
        _event(10, "step_started", "3", "ship"),
        _event(11, "compensation_started", "1", "reserve"),
        _event(12, "compensation_done", "1", "reserve"),
    ]
    running = flow_items(structure, events, finished=False)
    finished = flow_items(structure, events, finished=True)
    assert running is not None
    assert finished is not None
    marks = [(box.step, box.mark, box.attempts) for item in running for box in item.boxes]
    assert marks == [
        ("reserve", "compensated", 1),
        ("email", "skipped", 1),
        ("charge", "committed", 2),
        ("ship", "running", 1),
    ]
    assert [item.group for item in running] == [False, True, False]
    assert [item.pivot for item in running] == [False, True, False]
    assert finished[2].boxes[0].mark == "in-doubt"


def test_a_structure_the_console_cannot_read_draws_no_flow() -> None:
    assert flow_items("not json", [], finished=True) is None
    assert flow_items('[{"no": "key"}]', [], finished=True) is None


async def test_a_saga_whose_stored_structure_is_unreadable_says_so() -> None:
    store = InMemorySagaStore()
    record = dataclasses.replace(a_record("odd-1"), structure="{")  # a store written by hand
    await store.begin(record, [an_event(1, "saga_started")], 30)
    async with client(create_console_app(store, token=TOKEN)) as browser:
        page = (await browser.get("/sagas/odd-1")).text
    assert "The flow's structure in the store cannot be read." in page


def test_data_is_highlighted_json_with_every_value_escaped() -> None:
    shown = str(highlight_json(f'{{"note": "{HOSTILE}", "n": -1.5e3, "ok": true, "x": null}}'))
    assert '<span class="j-key">&#34;n&#34;</span>: <span class="j-number">-1.5e3</span>' in (
        shown.replace("-1500.0", "-1.5e3")
    )
    assert '<span class="j-literal">true</span>' in shown
    assert '<span class="j-literal">null</span>' in shown
    assert (
        '<span class="j-string">&#34;&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;&#34;'
        "</span>" in shown
    )
    assert "<script>" not in shown
    assert str(highlight_json("<b>not json</b>")) == "&lt;b&gt;not json&lt;/b&gt;"


async def test_the_log_shows_the_idempotency_key_each_attempt_was_given() -> None:
    store = InMemorySagaStore()
    ledger = Ledger()
    flow = saga_flow(ledger.transaction("reserve", bump("stock")), ledger.transaction("pay"))
    engine = SagaEngine(store=store)
    data = Ticket(order_id=1)
    await engine.run(flow, data, saga_name="order")
    await engine.aclose()
    async with client(create_console_app(store, token=TOKEN)) as browser:
        page = (await browser.get(f"/sagas/{data.saga_id}")).text
    shown = re.findall(r'<td class="key">([^<]+)</td>', page)
    assert shown == [key for _, key in ledger.entries]
    assert len(shown) == 2


async def test_sagas_whose_flow_changed_are_labelled_in_needs_attention() -> None:
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    ledger = Ledger()
    old = saga_flow(ledger.transaction("reserve"), ledger.transaction("pay"))
    crashed, _ = engines(store, old)
    ledger.crash_at = "pay"
    data = Ticket(order_id=1)
    with pytest.raises(Crash):
        await crashed.run(old, data, saga_name="order")
    clock.expire()
    changed = SagaEngine(store=store)
    changed.register("order", saga_flow(ledger.transaction("reserve"), ledger.transaction("ship")))
    saga_id = str(data.saga_id)

    async with client(create_console_app(store, changed, token=TOKEN)) as browser:
        attention = (await browser.get("/attention")).text
        page = (await browser.get(f"/sagas/{saga_id}")).text
    async with client(create_console_app(store, token=TOKEN)) as browser:
        without_app = (await browser.get("/attention")).text
    await changed.aclose()

    flow_changed = attention.split("Flow changed")[1].split("Unfinished, nobody recovering")[0]
    assert saga_id in flow_changed
    assert saga_id not in attention.split("Unfinished, nobody recovering")[1]
    assert 'id="flow-changed"' in page
    assert "(the application's flow now has another)" in page
    assert saga_id in without_app.split("Unfinished, nobody recovering")[1]
    assert "start the console with --app to tell which sagas&#39; flow changed" in without_app


async def test_a_failed_rollback_whose_flow_changed_says_so_in_needs_attention() -> None:
    store = InMemorySagaStore()
    flow = saga_flow(step(reserve, compensate=release), charge)
    engine, _ = engines(store, flow)
    same, other = Ticket(order_id=1), Ticket(order_id=2)
    for data, name in ((same, "order"), (other, "payment")):
        engine.register(name, flow)
        with pytest.raises(SagaCompensationFailedError):
            await engine.run(flow, data, saga_name=name)
    await engine.aclose()
    console_engine = SagaEngine(store=store)
    console_engine.register("order", flow)
    console_engine.register("payment", saga_flow(step(reserve, compensate=release)))
    async with client(create_console_app(store, console_engine, token=TOKEN)) as browser:
        attention = (await browser.get("/attention")).text
    await console_engine.aclose()

    rows = {
        saga_id: "flow changed</span>" in row
        for saga_id, row in re.findall(
            r'class="saga-link" href="[^"]*">([^<]*)</a>(.*?)</tr>', attention, re.S
        )
    }
    assert rows == {str(same.saga_id): False, str(other.saga_id): True}


async def test_a_registered_flow_that_cannot_be_built_is_not_taken_for_a_change() -> None:
    store = InMemorySagaStore()
    await store.begin(a_record("run-1"), [an_event(1, "saga_started")], 30)
    engine = SagaEngine(store=store)

    def broken() -> object:
        raise RuntimeError("flow module failed to import")

    engine.register("Order", broken)  # type: ignore[arg-type] # a function that raises
    async with client(create_console_app(store, engine, token=TOKEN)) as browser:
        page = (await browser.get("/sagas/run-1")).text
    await engine.aclose()
    assert 'id="flow-changed"' not in page
    assert "flow has the same" not in page


async def test_the_nodes_page_lists_engines_holding_leases_and_their_last_renewal() -> None:
    store = InMemorySagaStore()
    await store.begin(a_record("run-1", owner="engine-a"), [an_event(1, "saga_started")], 30)
    await store.begin(a_record("run-2", owner="engine-<b>"), [an_event(1, "saga_started")], 30)
    await store.renew("engine-a", ["run-1"], 60)
    app = create_console_app(store, token=TOKEN)
    async with client(app) as browser:
        page = (await browser.get("/nodes")).text
    async with client(app, REMOTE) as elsewhere:
        refused = await elsewhere.get("/nodes")
    async with logged_in(app, REMOTE) as operator:
        allowed = await operator.get("/nodes")

    rows = re.findall(r'<td class="owner">([^<]*)</td>', page)
    assert rows == ["engine-&lt;b&gt;", "engine-a"]
    assert "not since it took them" in page
    assert re.search(r"\(\d+ s ago\)", page)
    assert refused.status_code == 401
    assert allowed.status_code == 200


async def test_the_nodes_page_says_when_no_engine_holds_a_lease() -> None:
    store = InMemorySagaStore()
    await store.begin(a_record("done-1"), [an_event(1, "saga_started")], 30)
    finished = SagaUpdate(status=StoredStatus.COMPLETED, release=True)
    await store.append("done-1", "engine-a", [], finished, 30)
    async with client(create_console_app(store, token=TOKEN)) as browser:
        page = (await browser.get("/nodes")).text
    assert "No engine holds a lease on an unfinished saga." in page
