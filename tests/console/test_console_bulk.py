"""Bulk actions on the list's filter: a dry run first (how many sagas, which of them the action
applies to, why not the others; nothing changes), then the confirmed action on exactly the
sagas counted, each audited (who, when, from where); refused as single actions are (no
login, no CSRF token, another site)."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from starlette.applications import Starlette

from spakky_saga import InMemorySagaStore, StoredStatus
from spakky_saga.console import create_console_app
from spakky_saga.store import SagaUpdate
from tests.console.test_console_app import LOCAL, TOKEN, client, csrf_of, logged_in
from tests.stores.test_store_contract import a_record, an_event


@pytest.fixture
async def store() -> InMemorySagaStore:
    """Three RUNNING Order sagas (one asked to cancel already), one RUNNING Payment, one
    COMPLETED Order."""
    store = InMemorySagaStore()
    for saga_id, name in (("o-1", "Order"), ("o-2", "Order"), ("o-3", "Order"), ("p-1", "Pay")):
        await store.begin(a_record(saga_id, name=name), [an_event(1, "saga_started")], 30)
    await store.request_cancel("o-3", "bob@box")
    await store.begin(a_record("o-done", name="Order"), [an_event(1, "saga_started")], 30)
    finished = SagaUpdate(status=StoredStatus.COMPLETED, release=True)
    await store.append("o-done", "engine-a", [], finished, 30)
    return store


@pytest.fixture
def app(store: InMemorySagaStore) -> Starlette:
    return create_console_app(store, token=TOKEN)


def _confirm_form(page: str) -> dict[str, list[str]]:
    form = page.split('class="action bulk-confirm"')[1].split("</form>", maxsplit=1)[0]
    return {
        "csrf": [csrf_of(form)],
        "saga": re.findall(r'name="saga" value="([^"]*)"', form),
    }


async def test_the_list_links_each_bulk_action_with_its_filter(app: Starlette) -> None:
    async with client(app) as browser:
        page = (await browser.get("/", params={"name": "Order", "status": "RUNNING"})).text
    link = html.unescape(page.split('class="bulk-cancel" href="')[1].split('"')[0])
    assert link.startswith("http://127.0.0.1:8000/bulk/cancel?")
    assert "name=Order" in link
    assert "status=RUNNING" in link


async def test_a_dry_run_counts_what_the_action_would_do_and_changes_nothing(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        page = await browser.get("/bulk/cancel", params={"name": "Order"})
    assert page.status_code == 200
    assert '<strong id="selected">4</strong> sagas match the filter' in page.text
    assert '<strong id="applicable">2</strong> can be acted on now' in page.text
    assert "cancel was requested by bob@box" in page.text
    assert "only a RUNNING or WAITING saga can be cancelled; it is COMPLETED" in page.text
    assert sorted(_confirm_form(page.text)["saga"]) == ["o-1", "o-2"]
    for saga_id in ("o-1", "o-2"):
        record = await store.load(saga_id)
        assert record is not None
        assert record.cancel_request is None
        assert await store.audit_trail(saga_id) == []


async def test_confirming_acts_on_each_saga_counted_and_audits_each(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        dry_run = await browser.get("/bulk/cancel", params={"name": "Order"})
        done = await browser.post("/bulk/cancel", data=_confirm_form(dry_run.text))
    assert done.status_code == 200
    assert done.text.count("requested: its engine cancels it") == 2
    for saga_id in ("o-1", "o-2"):
        record = await store.load(saga_id)
        assert record is not None
        assert record.cancel_request is not None
        assert record.cancel_request.by == "alice"
        [entry] = await store.audit_trail(saga_id)
        assert (entry.action, entry.by, entry.origin) == ("cancel", "alice", LOCAL[0])
    untouched = await store.load("p-1")
    assert untouched is not None
    assert untouched.cancel_request is None


async def test_a_saga_that_changed_or_went_since_the_dry_run_is_refused_on_its_own(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        dry_run = await browser.get("/bulk/cancel", params={"id": "o-1"})
        form = _confirm_form(dry_run.text)
        await store.request_cancel("o-1", "carol@box")  # another operator was faster
        done = await browser.post("/bulk/cancel", data={**form, "saga": ["o-1", "gone"]})
    assert "refused: cancel was requested by carol@box" in done.text
    assert "refused: no such saga" in done.text
    [entry] = await store.audit_trail("o-1")
    assert entry.outcome == "refused: cancel was requested by carol@box"


async def test_a_bulk_action_needs_a_login_a_csrf_token_and_the_same_site(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with client(app) as anonymous:
        dry_run = await anonymous.get("/bulk/cancel")
        no_login = await anonymous.post("/bulk/cancel", data={"saga": ["o-1"], "csrf": "x"})
    async with logged_in(app) as browser:
        token = _confirm_form((await browser.get("/bulk/cancel")).text)["csrf"]
        no_token = await browser.post("/bulk/cancel", data={"saga": ["o-1"]})
        elsewhere = await browser.post(
            "/bulk/cancel",
            data={"saga": ["o-1"], "csrf": token},
            headers={"Origin": "https://evil.test"},
        )
        unknown = await browser.get("/bulk/delete")
        bad_filter = await browser.get("/bulk/cancel", params={"status": "DONE"})
    assert dry_run.status_code == 200  # a dry run is a read: open on loopback...
    assert 'id="confirm" disabled' in dry_run.text  # ...but its button needs a login
    assert no_login.status_code == 401
    assert no_token.status_code == 403
    assert elsewhere.status_code == 403
    assert unknown.status_code == 404
    assert bad_filter.status_code == 400
    assert await store.audit_trail("o-1") == []


async def test_a_dry_run_from_another_machine_needs_a_login(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as remote:
        page = await remote.get("/bulk/recover")
    assert page.status_code == 401


async def test_a_filter_matching_nothing_offers_nothing_to_confirm(app: Starlette) -> None:
    async with logged_in(app) as browser:
        page = await browser.get("/bulk/retry-compensation", params={"name": "Nobody"})
        token = csrf_of((await browser.get("/sagas/o-1")).text)
        empty = await browser.post("/bulk/retry-compensation", data={"csrf": token})
    assert '<strong id="selected">0</strong> sagas match' in page.text
    assert "bulk-confirm" not in page.text
    assert "No saga was selected." in empty.text
