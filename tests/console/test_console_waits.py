"""The console and sagas that wait (docs/waits.md), on SQLite and PostgreSQL: the list counts
and filters WAITING sagas; a saga's page shows its wait (step, signal type, wake-up time,
signals stored and taken, with ids) or its escalation (step, error); "needs attention" lists
escalated sagas and waits past their wake-up time; an operator answers an escalation, sends
a signal (its payload validated, errors escaped) and cancels a WAITING saga, each audited
and refused without a login, a CSRF token or from another site."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette

from spakky_saga import (
    AbstractSagaData,
    Escalate,
    InMemorySagaStore,
    PostgresSagaStore,
    SagaEngine,
    SagaStatus,
    SqliteSagaStore,
    StoredStatus,
    saga_flow,
    sleep,
    step,
    wait_for,
)
from spakky_saga.console import create_console_app
from spakky_saga.console.waiting import escalation_of, wait_of
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.store import StoredEvent
from tests import cli_app
from tests.console.test_console_app import TOKEN, client, csrf_of, escaped, logged_in
from tests.postgres_support import postgres_schema
from tests.stores.test_store_contract import a_record, an_event

HOSTILE = "<script>alert('owned')</script>"


class Order(AbstractSagaData):
    amount: int = 0
    note: str = ""


@dataclass(frozen=True)
class Paid:
    amount: int


@dataclass(frozen=True)
class Shipped:
    note: str


def with_payment(data: Order, signal: Paid) -> Order:
    return dataclasses.replace(data, amount=signal.amount)


def with_shipment(data: Order, signal: Shipped) -> Order:
    return dataclasses.replace(data, note=signal.note)


RELEASED: list[int] = []
SHIPPED: list[str] = []


async def reserve(data: Order) -> None:
    return None


async def release(data: Order) -> None:
    RELEASED.append(data.amount)


async def ship(data: Order) -> None:
    if not SHIPPED:
        SHIPPED.append("failed")
        raise ConnectionError(f"warehouse down {HOSTILE}")
    SHIPPED.append("shipped")


PAYMENT = saga_flow(
    step(reserve, compensate=release),
    wait_for(Paid, merge=with_payment, timeout=timedelta(hours=1)),
    wait_for(Shipped, merge=with_shipment),
)
SHIPMENT = saga_flow(step(reserve, compensate=release), step(ship) | Escalate())
NAP = saga_flow(reserve, sleep(timedelta(milliseconds=1)))


def escalating_engine(store: SagaConsoleStore | None = None) -> SagaEngine:
    """An engine with this module's flows registered; what `--app
    tests.console.test_console_waits:escalating_engine` loads in the browser test (on the
    store its environment names)."""
    engine = SagaEngine(store=store or cli_app.store(), log=False)
    engine.register("payment", PAYMENT)
    engine.register("shipment", SHIPMENT)
    engine.register("nap", NAP)
    return engine


async def waiting_saga(engine: SagaEngine, name: str) -> str:
    """A saga of flow `name` run until it waits (SHIPMENT's: escalated); its id."""
    if name == "shipment":
        SHIPPED.clear()
    flow = {"payment": PAYMENT, "shipment": SHIPMENT, "nap": NAP}[name]
    data = Order()
    result = await engine.run(flow, data, saga_name=name)
    assert result.status is SagaStatus.WAITING
    return str(data.saga_id)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaConsoleStore]:
    if request.param == "sqlite":
        sqlite = SqliteSagaStore(str(tmp_path / "sagas.db"))
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    async with postgres_schema() as (dsn, schema):
        postgres = PostgresSagaStore(dsn, schema=schema, max_size=4)
        await postgres.open()
        yield postgres
        await postgres.close()


@pytest.fixture
async def engine(store: SagaConsoleStore) -> AsyncIterator[SagaEngine]:
    RELEASED.clear()
    engine = escalating_engine(store)
    yield engine
    await engine.aclose()


@pytest.fixture
def app(store: SagaConsoleStore, engine: SagaEngine) -> Starlette:
    return create_console_app(store, engine=engine, token=TOKEN)


def _section(page: str, element_id: str) -> str:
    """The text of the element with `element_id` (tags dropped, entities kept)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:dd|section|table|form)>', page, re.S)
    assert match is not None, element_id
    return re.sub(r"<[^>]+>", "", match.group(1))


async def _act(app: Starlette, saga_id: str, action: str, **fields: str) -> tuple[int, str]:
    """Post `action`'s form as a logged-in operator; the status and the saga's page after."""
    async with logged_in(app) as browser:
        page = (await browser.get(f"/sagas/{saga_id}")).text
        done = await browser.post(
            f"/sagas/{saga_id}/{action}", data={"csrf": csrf_of(page), **fields}
        )
        after = (await browser.get(f"/sagas/{saga_id}")).text
    return done.status_code, after


async def _outcome(store: SagaConsoleStore, saga_id: str) -> str:
    *_, entry = await store.audit_trail(saga_id)
    assert entry.by == "alice"
    assert entry.origin == "127.0.0.1"
    return entry.outcome


async def _status(store: SagaConsoleStore, saga_id: str) -> StoredStatus:
    record = await store.load(saga_id)
    assert record is not None
    return record.status


async def test_the_list_counts_and_filters_waiting_sagas(
    app: Starlette, engine: SagaEngine
) -> None:
    waiting = await waiting_saga(engine, "payment")
    async with client(app) as browser:
        everything = await browser.get("/")
        only_waiting = await browser.get("/", params={"status": "WAITING"})
        only_running = await browser.get("/", params={"status": "RUNNING"})
    assert 'data-status="WAITING"><span>WAITING</span><strong>1</strong>' in everything.text
    assert waiting in only_waiting.text
    assert 'class="status status-waiting">WAITING' in only_waiting.text
    assert waiting not in only_running.text


async def test_a_waiting_sagas_page_shows_its_wait_its_wake_up_time_and_its_signals(
    app: Starlette, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    await engine.signal(saga_id, Shipped(note=HOSTILE), signal_id="early-1")
    async with client(app) as browser:
        before = (await browser.get(f"/sagas/{saga_id}")).text
        await engine.signal(saga_id, Paid(amount=7), signal_id="paid-1")
        after = (await browser.get(f"/sagas/{saga_id}")).text

    assert "wait_for(Paid) (step 2)" in _section(before, "wait-step")
    assert "tests.console.test_console_waits:Paid" in _section(before, "wait-for")
    assert "its deadline" in _section(before, "wake-at")
    assert _section(before, "wait-pending") == "none"  # Shipped is for the later wait
    signals = _section(before, "signals")
    assert "early-1" in signals
    assert "not taken yet" in signals
    assert escaped(HOSTILE) in before
    assert HOSTILE not in before
    assert "1 signal it would take (paid-1)" in _section(after, "wait-pending")
    assert "paid-1" in _section(after, "signals")


async def test_an_escalated_sagas_page_shows_the_failed_step_and_its_error_escaped(
    app: Starlette, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "shipment")
    async with client(app) as browser:
        page = (await browser.get(f"/sagas/{saga_id}")).text
    assert "Waiting for an operator's decision" in page
    assert "ship (step 2)" in _section(page, "wait-step")
    error = _section(page, "escalation-error")
    assert error.startswith("ConnectionError: warehouse down ")
    assert escaped(HOSTILE) in error
    assert HOSTILE not in page
    assert 'id="resolve-form"' in page


async def test_needs_attention_lists_escalated_sagas_and_waits_past_their_wake_up_time(
    app: Starlette, engine: SagaEngine
) -> None:
    escalated = await waiting_saga(engine, "shipment")
    waiting = await waiting_saga(engine, "payment")  # wakes in an hour: not overdue
    napping = await waiting_saga(engine, "nap")  # its 1 ms sleep is over: nobody resumed it
    async with client(app) as browser:
        page = (await browser.get("/attention")).text
    sections = dict(re.findall(r"<h2>(.*?) <span class=\"n\">.*?</h2>(.*?)</section>", page, re.S))
    decision = sections["Waiting for an operator&#39;s decision"]
    overdue = sections["Waits past their wake-up time"]
    assert escalated in decision
    assert "ship" in decision  # the failed step, and its error
    assert "ConnectionError: warehouse down" in decision
    assert waiting not in decision
    assert napping in overdue
    assert waiting not in overdue
    assert escalated not in overdue


async def test_an_operator_answers_an_escalation_and_the_saga_carries_it_out(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "shipment")
    status, page = await _act(app, saga_id, "resolve", decision="retry")
    assert status == 303
    assert await _status(store, saga_id) is StoredStatus.COMPLETED
    outcome = await _outcome(store, saga_id)
    assert re.fullmatch(r"decided retry \(\S+\); resumed here: completed", outcome), outcome
    assert SHIPPED == ["failed", "shipped"]
    assert 'id="wait"' not in page
    record = await store.load(saga_id)
    assert record is not None
    assert '"by":"alice"' in "".join(e.data or "" for e in record.events).replace(" ", "")


async def test_answering_compensate_rolls_the_saga_back(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "shipment")
    await _act(app, saga_id, "resolve", decision="compensate")
    assert await _status(store, saga_id) is StoredStatus.FAILED
    assert RELEASED == [0]


async def test_a_resolve_on_a_saga_that_did_not_escalate_is_refused_and_stores_nothing(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    status, page = await _act(app, saga_id, "resolve", decision="skip")
    assert status == 303
    outcome = await _outcome(store, saga_id)
    assert outcome.startswith("refused: only a saga waiting for an operator's decision")
    assert await store.signals(saga_id) == []  # type: ignore[attr-defined] # a SignalStore
    assert await _status(store, saga_id) is StoredStatus.WAITING
    assert 'id="resolve-form"' not in page


async def test_an_answer_that_is_not_retry_skip_or_compensate_is_refused(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "shipment")
    await _act(app, saga_id, "resolve", decision="<b>later</b>")
    outcome = await _outcome(store, saga_id)
    assert outcome.startswith("failed: SagaResolutionError: '<b>later</b>' is not an answer")
    assert await _status(store, saga_id) is StoredStatus.WAITING


async def test_a_signal_sent_from_the_page_resumes_the_saga_with_its_payload(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    async with client(app) as browser:
        page = (await browser.get(f"/sagas/{saga_id}")).text
    offered = re.findall(r'<option value="([^"]+)"', page)
    assert offered == [
        "tests.console.test_console_waits:Paid",
        "tests.console.test_console_waits:Shipped",
    ]
    await _act(app, saga_id, "signal", type=offered[0], payload='{"amount": 12}', signal_id="p-9")
    outcome = await _outcome(store, saga_id)
    assert outcome == (
        "signal p-9 (tests.console.test_console_waits:Paid) stored; resumed here: waiting"
    )
    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.WAITING  # now at the Shipped wait
    assert '"amount":12' in record.data.replace(" ", "")


async def test_a_payload_that_does_not_validate_is_refused_with_the_error_escaped(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    payload = f'{{"amount": "{HOSTILE}"}}'
    _, page = await _act(
        app, saga_id, "signal", type="tests.console.test_console_waits:Paid", payload=payload
    )
    outcome = await _outcome(store, saga_id)
    assert outcome.startswith("failed: SagaSignalTypeError: the payload is not a valid Paid: ")
    assert HOSTILE in outcome
    assert escaped(HOSTILE) in _section(page, "audit")
    assert HOSTILE not in page
    assert await store.signals(saga_id) == []  # type: ignore[attr-defined] # a SignalStore


async def test_a_signal_type_the_flow_does_not_wait_for_is_refused_without_importing_it(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    await _act(app, saga_id, "signal", type="os:system", payload="{}")
    outcome = await _outcome(store, saga_id)
    assert outcome.startswith(
        "failed: SagaSignalTypeError: 'os:system' is not a signal type the waits of payment take"
    )


async def test_cancelling_a_waiting_saga_compensates_it_here(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    await _act(app, saga_id, "cancel")
    assert await _outcome(store, saga_id) == "recovered here: cancelled"
    assert await _status(store, saga_id) is StoredStatus.CANCELLED
    assert RELEASED == [0]


async def test_without_the_app_a_waiting_saga_can_be_cancelled_but_not_signalled(
    store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    app = create_console_app(store, token=TOKEN)
    async with client(app) as browser:
        page = (await browser.get(f"/sagas/{saga_id}")).text
    assert "start the console with --app to tell which" in _section(page, "wait-for")
    assert "needs the application" in _section(page, "signal-form")
    await _act(app, saga_id, "signal", type="tests.console.test_console_waits:Paid", payload="{}")
    assert (await _outcome(store, saga_id)).startswith("refused: needs the application's flows")
    await _act(app, saga_id, "cancel")
    assert await _outcome(store, saga_id) == (
        "requested: the request woke it; an engine on the store compensates it"
    )
    report = await engine.recover()
    assert [s.outcome.value for s in report.sagas] == ["cancelled"]


@pytest.mark.parametrize("action", ["resolve", "signal", "cancel"])
async def test_acting_on_a_waiting_saga_needs_a_login_a_csrf_token_and_the_same_site(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine, action: str
) -> None:
    saga_id = await waiting_saga(engine, "shipment")
    fields = {"decision": "skip", "type": "x", "payload": "{}"}
    async with client(app) as anonymous:
        no_login = await anonymous.post(f"/sagas/{saga_id}/{action}", data=fields)
    async with logged_in(app) as browser:
        token = csrf_of((await browser.get(f"/sagas/{saga_id}")).text)
        bad_token = await browser.post(
            f"/sagas/{saga_id}/{action}", data={**fields, "csrf": "forged"}
        )
        elsewhere = await browser.post(
            f"/sagas/{saga_id}/{action}",
            data={**fields, "csrf": token},
            headers={"Origin": "https://evil.test"},
        )
    assert no_login.status_code == 401
    assert bad_token.status_code == 403
    assert elsewhere.status_code == 403
    assert await store.audit_trail(saga_id) == []
    assert await _status(store, saga_id) is StoredStatus.WAITING


async def test_bulk_cancel_takes_waiting_sagas_and_decisions_and_signals_are_not_bulk(
    app: Starlette, store: SagaConsoleStore, engine: SagaEngine
) -> None:
    saga_id = await waiting_saga(engine, "payment")
    async with logged_in(app) as browser:
        listing = (await browser.get("/")).text
        dry_run = (await browser.get("/bulk/cancel", params={"status": "WAITING"})).text
        resolve = await browser.get("/bulk/resolve")
        signal = await browser.post("/bulk/signal", data={"saga": [saga_id]})
    assert "/bulk/cancel" in listing
    assert "/bulk/resolve" not in listing
    assert "/bulk/signal" not in listing
    assert f'name="saga" value="{saga_id}"' in dry_run
    assert resolve.status_code == 404
    assert signal.status_code == 404
    assert html.unescape("Answer the escalation is not a bulk action.") in resolve.text


def _entry(seq: int, kind: str, key: str = "2") -> StoredEvent:
    return StoredEvent(seq, kind, float(seq), key, "ship", error_type="Boom", error="down")


def test_an_escalation_is_open_until_a_decision_or_a_new_attempt_follows_it() -> None:
    escalated = _entry(3, "step_escalated")
    decided = (_entry(1, "step_started"), escalated, _entry(4, "signal_received"))
    again = (*decided, _entry(5, "step_started"), _entry(6, "step_escalated"))
    elsewhere = (escalated, _entry(4, "step_started", key="3"))

    assert escalation_of((_entry(1, "step_started"), escalated)) == escalated
    assert escalation_of(decided) is None
    assert escalation_of(again) == _entry(6, "step_escalated")
    assert escalation_of(elsewhere) == escalated


async def test_a_waiting_saga_whose_log_names_no_wait_is_shown_without_one() -> None:
    memory = InMemorySagaStore()
    await memory.begin(a_record("w-1"), [an_event(1, "saga_started")], 30)
    await memory.suspend("w-1", "engine-a", None, 0)
    record = await memory.load("w-1")
    assert record is not None
    async with client(create_console_app(memory, token=TOKEN)) as browser:
        page = (await browser.get("/sagas/w-1")).text

    assert wait_of(dataclasses.replace(record, status=StoredStatus.RUNNING), [], None, None) is None
    assert _section(page, "wait-step") == "-"
    assert "only when a signal arrives" in _section(page, "wake-at")
    assert "<dt>Since</dt><dd>-</dd>" in page
