"""What an action records when the saga changed between the page and the click (another
operator, its engine), or the engine refuses it; and the small pieces the console is built
of: which addresses are this machine, the port option, the created-time filter, a saga whose
data is not JSON, security headers on a non-HTTP scope."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from spakky_saga import InMemorySagaStore, SagaEngine, StoredStatus
from spakky_saga.cli import main
from spakky_saga.console import create_console_app
from spakky_saga.console.actions import Action, perform
from spakky_saga.console.security import SecurityHeaders
from spakky_saga.console.server import loopback
from spakky_saga.store import SagaRecord, SagaUpdate
from tests.stores.test_store_contract import a_record, an_event


@pytest.fixture
async def store() -> InMemorySagaStore:
    store = InMemorySagaStore()
    await store.begin(a_record("held"), [an_event(1, "saga_started")], 30)
    await store.begin(a_record("done"), [an_event(1, "saga_started")], 30)
    await store.append(
        "done", "engine-a", [], SagaUpdate(status=StoredStatus.COMPLETED, release=True), 30
    )
    return store


async def _as_seen(store: InMemorySagaStore, saga_id: str, **changes: object) -> SagaRecord:
    record = await store.load(saga_id)
    assert record is not None
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type] # fields by name


async def test_cancel_of_a_saga_that_finished_since_the_page_is_refused(
    store: InMemorySagaStore,
) -> None:
    seen = await _as_seen(store, "done", status=StoredStatus.RUNNING)
    entry = await perform(Action.CANCEL, "done", store, seen, None, by="ann", origin="::1")
    assert entry.outcome == "refused: it is no longer RUNNING or WAITING"


async def test_cancel_of_a_saga_whose_engine_is_alive_leaves_it_to_that_engine(
    store: InMemorySagaStore,
) -> None:
    engine = SagaEngine(store=store)
    seen = await _as_seen(store, "held")
    entry = await perform(Action.CANCEL, "held", store, seen, engine, by="ann", origin="::1")
    assert entry.outcome == "requested: its engine is alive and cancels it within a lease"


async def test_recover_of_a_saga_an_engine_took_since_the_page_recovers_nothing(
    store: InMemorySagaStore,
) -> None:
    engine = SagaEngine(store=store)
    seen = await _as_seen(store, "held", owner=None)
    entry = await perform(Action.RECOVER, "held", store, seen, engine, by="ann", origin="::1")
    assert entry.outcome == "nothing recovered: another engine holds it"


async def test_an_action_the_engine_refuses_is_recorded_as_failed_with_its_reason(
    store: InMemorySagaStore,
) -> None:
    engine = SagaEngine(store=store)
    seen = await _as_seen(store, "done", status=StoredStatus.COMPENSATION_FAILED)
    entry = await perform(
        Action.RETRY_COMPENSATION,
        "done",
        store,
        seen,
        engine,
        by="ann",
        origin="::1",
    )
    assert entry.outcome.startswith("failed: SagaStoreError: saga done is COMPLETED")
    assert await store.audit_trail("done") == [entry]


async def test_a_saga_whose_data_is_not_json_shows_its_text(store: InMemorySagaStore) -> None:
    await store.begin(
        dataclasses.replace(a_record("odd"), data="not json <b>"), [an_event(1, "saga_started")], 30
    )
    transport = httpx.ASGITransport(app=create_console_app(store), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as browser:
        page = await browser.get("/sagas/odd")
        by_created = await browser.get("/", params={"time": "created", "from": "2000-01-01"})
        before_2000 = await browser.get("/", params={"time": "created", "to": "2000-01-01"})
    assert "not json &lt;b&gt;" in page.text
    assert "odd" in by_created.text
    assert "No sagas match." in before_2000.text


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("db", False)],
)
def test_only_loopback_addresses_count_as_this_machine(host: str, local: bool) -> None:
    assert loopback(host) is local


@pytest.mark.parametrize("port", ["http", "70000"])
def test_a_port_that_is_not_one_is_a_usage_error(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["console", "--store", "sagas.db", "--port", port])
    assert exited.value.code == 2
    assert f"{port}: give a port number, 0 to 65535" in capsys.readouterr().err


async def test_security_headers_pass_other_scopes_through_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await SecurityHeaders(inner)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
