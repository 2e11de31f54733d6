"""The console as an ASGI application (httpx in the test's loop): what the pages show, that
everything is escaped and scripts are the console's own files only, who may look and who may
act (token, CSRF, other sites, other machines), the actions and their audit trail, and the
console mounted in a host application with its own authentication hook."""

from __future__ import annotations

import contextlib
import dataclasses
import html
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from spakky_saga import (
    InMemorySagaStore,
    SagaCompensationFailedError,
    SagaEngine,
    SqliteSagaStore,
    StoredStatus,
    saga_flow,
    step,
)
from spakky_saga.console import (
    CONTENT_SECURITY_POLICY,
    ConsoleConfigurationError,
    create_console_app,
)
from spakky_saga.store import SagaUpdate, StoredEvent
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines
from tests.stores.test_store_contract import a_record, an_event

TOKEN = "test-token-1234"
HOSTILE = "<script>alert('owned')</script>"
LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)
DOCS = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text("utf-8")


def client(app: Starlette, where: tuple[str, int] = LOCAL) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=where)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


@contextlib.asynccontextmanager
async def logged_in(
    app: Starlette, where: tuple[str, int] = LOCAL
) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, where) as browser:
        done = await browser.post("/login", data={"token": TOKEN, "name": "alice"})
        assert done.status_code == 303
        yield browser


def escaped(text: str) -> str:
    """`text` as the console's pages (Jinja2's autoescape) write it."""
    return html.escape(text).replace("&#x27;", "&#39;")


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


@pytest.fixture
async def store() -> InMemorySagaStore:
    store = InMemorySagaStore()
    running = dataclasses.replace(a_record("run-1"), data=f'{{"note": "{HOSTILE}"}}')
    await store.begin(running, [an_event(1, "saga_started")], 30)
    await store.begin(a_record("done-1", name="Payment"), [an_event(1, "saga_started")], 30)
    failed = StoredEvent(2, "step_failed", 0.0, "1", "reserve", 1, 0.5, "Boom", HOSTILE)
    await store.append(
        "done-1",
        "engine-a",
        [failed],
        SagaUpdate(status=StoredStatus.COMPLETED, error=HOSTILE, release=True),
        30,
    )
    return store


@pytest.fixture
def app(store: InMemorySagaStore) -> Starlette:
    return create_console_app(store, token=TOKEN)


async def test_the_list_shows_counts_per_status_and_every_saga(app: Starlette) -> None:
    async with client(app) as browser:
        page = await browser.get("/")
    assert page.status_code == 200
    assert "run-1" in page.text
    assert "done-1" in page.text
    assert 'data-status="RUNNING"><span>RUNNING</span><strong>1</strong>' in page.text
    assert 'data-status="COMPLETED"><span>COMPLETED</span><strong>1</strong>' in page.text


async def test_the_list_filters_by_status_name_and_id_from_the_url(app: Starlette) -> None:
    async with client(app) as browser:
        by_status = await browser.get("/", params={"status": "COMPLETED"})
        by_name = await browser.get("/", params={"name": "Order"})
        by_id = await browser.get("/", params={"id": "done"})
    assert "done-1" in by_status.text
    assert "run-1" not in by_status.text
    assert "run-1" in by_name.text
    assert "done-1" not in by_name.text
    assert "done-1" in by_id.text
    assert "run-1" not in by_id.text


async def test_the_list_pages_with_a_next_link(app: Starlette) -> None:
    async with client(app) as browser:
        first = await browser.get("/", params={"limit": "1", "sort": "created", "order": "asc"})
        assert "run-1" in first.text
        assert "done-1" not in first.text
        link = html.unescape(first.text.split('class="next" href="')[1].split('"')[0])
        second = await browser.get("/" + link)
    assert "done-1" in second.text
    assert "run-1" not in second.text
    assert 'class="next"' not in second.text


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"status": "DONE"}, "status='DONE' is not a saga status"),
        ({"from": "yesterday"}, "from='yesterday' is not an ISO date or time"),
        ({"after": "nope"}, "start again from the first page"),
        ({"limit": "9999"}, "a page holds 1 to 500 sagas"),
        ({"sort": "name"}, "sort='name': choose one of updated, created"),
        ({"limit": "x"}, "limit='x': give a number"),
    ],
)
async def test_a_filter_the_console_cannot_read_is_refused_saying_which(
    app: Starlette, params: dict[str, str], said: str
) -> None:
    async with client(app) as browser:
        page = await browser.get("/", params=params)
    assert page.status_code == 400
    assert escaped(said) in page.text


async def test_hostile_filter_values_match_nothing_and_break_nothing(app: Starlette) -> None:
    async with client(app) as browser:
        for value in ("' OR '1'='1", "%", "x'; DROP TABLE spakky_saga_sagas; --"):
            page = await browser.get("/", params={"name": value, "id": value})
            assert page.status_code == 200
            assert "No sagas match." in page.text
        assert "run-1" in (await browser.get("/")).text


async def test_saga_data_and_errors_holding_markup_render_as_text(app: Starlette) -> None:
    async with client(app) as browser:
        running = await browser.get("/sagas/run-1")
        finished = await browser.get("/sagas/done-1")
        listing = await browser.get("/")
    for page in (running, finished, listing):
        assert HOSTILE not in page.text
    assert escaped(HOSTILE) in running.text
    assert "&lt;script&gt;" in finished.text


async def test_every_response_forbids_inline_scripts_and_framing(app: Starlette) -> None:
    async with client(app, REMOTE) as browser:
        responses = [
            await browser.get("/"),
            await browser.get("/static/console.js"),
            await browser.get("/login"),
        ]
    async with client(app) as browser:
        responses += [await browser.get("/sagas/run-1"), await browser.get("/sagas/nobody")]
    for response in responses:
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    page = responses[3].text
    assert "<script>" not in page  # the only script is a file: <script src=... defer>
    assert 'src="http://127.0.0.1:8000/static/console.js"' in page


async def test_pages_are_open_on_loopback_and_need_a_login_from_elsewhere(app: Starlette) -> None:
    async with client(app, REMOTE) as stranger:
        refused = [await stranger.get(path) for path in ("/", "/sagas/run-1", "/attention")]
        bearer = await stranger.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        wrong = await stranger.get("/", headers={"Authorization": "Bearer guess"})
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert "run-1" not in refused[1].text
    assert bearer.status_code == 200
    assert wrong.status_code == 401
    async with logged_in(app, REMOTE) as remote:
        assert (await remote.get("/sagas/run-1")).status_code == 200


async def test_a_wrong_token_does_not_log_in(app: Starlette) -> None:
    async with client(app) as browser:
        refused = await browser.post("/login", data={"token": "guess", "name": "mallory"})
        assert refused.status_code == 401
        assert "That token is not this console" in refused.text
        assert not browser.cookies
        page = await browser.get("/sagas/run-1")
    assert 'name="csrf" value=""' in page.text  # no operator: no CSRF token, buttons disabled
    assert "log in to act" in page.text


async def test_login_cookies_are_http_only_and_same_site_strict(app: Starlette) -> None:
    async with client(app) as browser:
        done = await browser.post("/login", data={"token": TOKEN, "name": "alice"})
    cookies = done.headers.get_list("set-cookie")
    assert len(cookies) == 2
    for cookie in cookies:
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie


async def test_an_action_without_a_login_is_refused_and_changes_nothing(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with client(app) as browser:
        refused = await browser.post("/sagas/run-1/cancel", data={"csrf": "x"})
    assert refused.status_code == 401
    record = await store.load("run-1")
    assert record is not None
    assert record.cancel_request is None
    assert await store.audit_trail("run-1") == []


async def test_an_action_without_its_csrf_token_is_refused(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        missing = await browser.post("/sagas/run-1/cancel")
        forged = await browser.post("/sagas/run-1/cancel", data={"csrf": "0" * 64})
    assert missing.status_code == 403
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    assert await store.audit_trail("run-1") == []


async def test_an_action_posted_from_another_site_is_refused(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        token = csrf_of((await browser.get("/sagas/run-1")).text)
        other_origin = await browser.post(
            "/sagas/run-1/cancel", data={"csrf": token}, headers={"Origin": "https://evil.test"}
        )
        other_site = await browser.post(
            "/sagas/run-1/cancel", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
    assert other_origin.status_code == 403
    assert other_site.status_code == 403
    assert await store.audit_trail("run-1") == []


async def test_cancel_records_the_request_and_who_asked_from_where(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        token = csrf_of((await browser.get("/sagas/run-1")).text)
        done = await browser.post(
            "/sagas/run-1/cancel", data={"csrf": token}, headers={"Origin": "http://127.0.0.1:8000"}
        )
        assert done.status_code == 303
        page = await browser.get(done.headers["location"])
    record = await store.load("run-1")
    assert record is not None
    assert record.cancel_request is not None
    assert record.cancel_request.by == "alice"
    [entry] = await store.audit_trail("run-1")
    assert (entry.action, entry.by, entry.origin) == ("cancel", "alice", "127.0.0.1")
    assert entry.outcome.startswith("requested")
    assert "cancel was requested by alice" in page.text


async def test_without_the_application_recover_and_retry_are_disabled_saying_why(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        page = await browser.get("/sagas/run-1")
        token = csrf_of(page.text)
        await browser.post("/sagas/run-1/recover", data={"csrf": token})
    assert "needs the application&#39;s flows: start the console with --app" in page.text
    [entry] = await store.audit_trail("run-1")
    assert entry.outcome.startswith("refused: needs the application's flows")


async def test_recover_from_the_console_compensates_a_saga_whose_engine_died() -> None:
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    ledger = Ledger()
    flow = saga_flow(ledger.transaction("reserve", bump("stock")), ledger.transaction("pay"))
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "pay"
    data = Ticket(order_id=1)
    with pytest.raises(Crash):
        await crashed.run(flow, data, saga_name="order")
    clock.expire()
    app = create_console_app(store, recovering, token=TOKEN)
    saga_id = str(data.saga_id)

    async with logged_in(app) as browser:
        attention = await browser.get("/attention")
        assert saga_id in attention.text
        token = csrf_of((await browser.get(f"/sagas/{saga_id}")).text)
        await browser.post(f"/sagas/{saga_id}/recover", data={"csrf": token})
        page = await browser.get(f"/sagas/{saga_id}")
    await recovering.aclose()

    assert ledger.names()[-2:] == ["undo pay", "undo reserve"]
    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED
    [entry] = await store.audit_trail(saga_id)
    assert entry.outcome == "recovered: compensated"
    assert "recovered: compensated" in page.text
    assert "COMPENSATED" in page.text  # the timeline's rows


async def test_an_unknown_saga_is_a_404_saying_so(app: Starlette) -> None:
    async with client(app) as browser:
        page = await browser.get("/sagas/nobody%3Cb%3E")
    assert page.status_code == 404
    assert "No saga &#39;nobody&lt;b&gt;&#39; in this store." in page.text


async def test_mounted_in_a_host_application_it_uses_the_host_authentication(
    store: InMemorySagaStore,
) -> None:
    async def host_auth(request: Request) -> str | None:
        return "carol (sso)" if request.headers.get("x-user") == "carol" else None

    host = Starlette(routes=[Mount("/ops/sagas", create_console_app(store, auth=host_auth))])
    async with client(host) as browser:
        page = await browser.get("/ops/sagas/sagas/run-1", headers={"x-user": "carol"})
        assert 'href="http://127.0.0.1:8000/ops/sagas/static/console.css"' in page.text
        assert "operator: carol (sso)" in page.text
        token = csrf_of(page.text)
        anonymous = await browser.post("/ops/sagas/sagas/run-1/cancel", data={"csrf": token})
        done = await browser.post(
            "/ops/sagas/sagas/run-1/cancel", data={"csrf": token}, headers={"x-user": "carol"}
        )
        login = await browser.get("/ops/sagas/login")
    assert anonymous.status_code == 401
    assert done.status_code == 303
    assert done.headers["location"] == "http://127.0.0.1:8000/ops/sagas/sagas/run-1"
    [entry] = await store.audit_trail("run-1")
    assert entry.by == "carol (sso)"
    assert login.status_code == 404


def test_a_store_without_the_console_queries_is_refused_at_once() -> None:
    with pytest.raises(ConsoleConfigurationError, match="needs a store with its queries"):
        create_console_app(object())  # type: ignore[arg-type] # what a user may pass


def test_an_engine_without_a_store_is_refused_at_once() -> None:
    with pytest.raises(ConsoleConfigurationError, match="the engine has no store"):
        create_console_app(InMemorySagaStore(), SagaEngine())


async def test_the_docs_mounting_example_serves_the_console_with_its_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = DOCS.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example, "docs/console.md", "exec"), namespace)
    app = namespace["app"]
    store = namespace["store"]
    assert isinstance(app, Starlette)
    assert isinstance(store, SqliteSagaStore)
    await store.open()
    try:
        await store.begin(a_record("run-1"), [an_event(1, "saga_started")], 30)
        async with client(app, REMOTE) as browser:
            stranger = await browser.get("/ops/sagas/")
            page = await browser.get("/ops/sagas/sagas/run-1", headers={"x-forwarded-user": "bob"})
            done = await browser.post(
                "/ops/sagas/sagas/run-1/cancel",
                data={"csrf": csrf_of(page.text)},
                headers={"x-forwarded-user": "bob"},
            )
        [entry] = await store.audit_trail("run-1")
    finally:
        await store.close()
    assert stranger.status_code == 401
    assert done.status_code == 303
    assert (entry.by, entry.origin) == ("bob", REMOTE[0])


async def test_retry_compensation_from_the_console_finishes_a_repaired_rollback() -> None:
    store = InMemorySagaStore()
    repaired = {"yes": False}

    async def reserve(data: Ticket) -> None:
        return None

    async def release(data: Ticket) -> None:
        if not repaired["yes"]:
            raise ConnectionError("stock service down")

    async def charge(data: Ticket) -> None:
        raise ValueError("card declined")

    flow = saga_flow(step(reserve, compensate=release), charge)
    engine, _ = engines(store, flow)
    data = Ticket(order_id=1)
    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, data, saga_name="order")
    saga_id = str(data.saga_id)
    app = create_console_app(store, engine, token=TOKEN)

    async with logged_in(app) as browser:
        attention = await browser.get("/attention")
        page = await browser.get(f"/sagas/{saga_id}")
        assert (
            "only a RUNNING or WAITING saga can be cancelled; it is COMPENSATION_FAILED"
            in page.text
        )
        assert "it is finished (COMPENSATION_FAILED): nothing to recover" in page.text
        repaired["yes"] = True
        await browser.post(
            f"/sagas/{saga_id}/retry-compensation", data={"csrf": csrf_of(page.text)}
        )
    await engine.aclose()

    assert saga_id in attention.text
    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED
    [entry] = await store.audit_trail(saga_id)
    assert (entry.action, entry.outcome) == ("retry-compensation", "retried: compensated")


async def test_recover_is_refused_while_a_live_engine_holds_the_saga(
    store: InMemorySagaStore,
) -> None:
    engine = SagaEngine(store=store)
    app = create_console_app(store, engine, token=TOKEN)
    async with logged_in(app) as browser:
        page = await browser.get("/sagas/run-1")
        await browser.post("/sagas/run-1/recover", data={"csrf": csrf_of(page.text)})
    assert "engine engine-a holds its lease and is running it" in page.text
    [entry] = await store.audit_trail("run-1")
    assert entry.outcome == "refused: engine engine-a holds its lease and is running it"


async def test_cancel_with_the_application_compensates_a_saga_whose_engine_died() -> None:
    clock = StoreClock()
    store = InMemorySagaStore(clock=clock)
    ledger = Ledger()
    flow = saga_flow(ledger.transaction("reserve", bump("stock")), ledger.transaction("pay"))
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "pay"
    data = Ticket(order_id=1)
    with pytest.raises(Crash):
        await crashed.run(flow, data, saga_name="order")
    clock.expire()
    saga_id = str(data.saga_id)
    app = create_console_app(store, recovering, token=TOKEN)
    async with logged_in(app) as browser:
        page = await browser.get(f"/sagas/{saga_id}")
        await browser.post(f"/sagas/{saga_id}/cancel", data={"csrf": csrf_of(page.text)})
    await recovering.aclose()
    record = await store.load(saga_id)
    assert record is not None
    assert record.status is StoredStatus.CANCELLED
    [entry] = await store.audit_trail(saga_id)
    assert entry.outcome == "recovered here: cancelled"


async def test_an_unknown_action_or_saga_is_a_404_and_a_null_origin_is_refused(
    app: Starlette, store: InMemorySagaStore
) -> None:
    async with logged_in(app) as browser:
        token = csrf_of((await browser.get("/sagas/run-1")).text)
        unknown_action = await browser.post("/sagas/run-1/delete", data={"csrf": token})
        unknown_saga = await browser.post("/sagas/nobody/cancel", data={"csrf": token})
        null_origin = await browser.post(
            "/sagas/run-1/cancel", data={"csrf": token}, headers={"Origin": "null"}
        )
        login_elsewhere = await browser.post(
            "/login", data={"token": TOKEN, "name": "x"}, headers={"Origin": "https://evil.test"}
        )
    assert unknown_action.status_code == 404
    assert unknown_saga.status_code == 404
    assert "No saga &#39;nobody&#39; in this store." in unknown_saga.text
    assert null_origin.status_code == 403
    assert login_elsewhere.status_code == 403
    assert await store.audit_trail("run-1") == []


async def test_a_client_without_an_address_is_not_taken_for_this_machine(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app, client=("unix-socket", 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as browser:
        page = await browser.get("/")
    assert page.status_code == 401


async def test_needs_attention_lists_sagas_stuck_past_their_pivot(
    store: InMemorySagaStore,
) -> None:
    await store.begin(a_record("stuck-1"), [an_event(1, "saga_started")], 30)
    await store.append(
        "stuck-1",
        "engine-a",
        [an_event(2, "saga_finished")],
        SagaUpdate(
            status=StoredStatus.STUCK, failed_step="ship", error="carrier down", release=True
        ),
        30,
    )
    app = create_console_app(store, token=TOKEN)

    async with logged_in(app) as browser:
        attention = await browser.get("/attention")

    assert "Stuck past the pivot" in attention.text
    assert "stuck-1" in attention.text
