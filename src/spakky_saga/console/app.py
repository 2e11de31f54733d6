"""`create_console_app`: the operations console as an ASGI application (Starlette), to serve
standalone (`spakky-saga console`) or to mount in a Starlette or FastAPI application.

Pages: the list (`/`: counts per status, filters, sorting, keyset paging, live refresh), a
saga (`/sagas/{id}`: its flow with this run's path, data, lease, fingerprint, timeline,
errors with their tracebacks, idempotency keys, log, audit trail, actions), what needs
attention (`/attention`) and the engines holding leases (`/nodes`). Actions post to
`/sagas/{id}/{action}`; a bulk action on the list's filter shows its dry run at
`/bulk/{action}?FILTER` and runs when that page's form is posted. See `security` for who may
look and who may act.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from spakky_saga.console.actions import (
    BULK_LIMIT,
    DECISIONS,
    Action,
    ActionInput,
    availability,
    perform,
    plan_bulk,
    signal_types,
    waits_of,
)
from spakky_saga.console.filters import ListFilter, list_filter
from spakky_saga.console.flowchart import MARKS, flow_items
from spakky_saga.console.highlight import highlight_json
from spakky_saga.console.security import (
    OPERATOR_COOKIE,
    TOKEN_COOKIE,
    ConsoleAuth,
    CsrfTokens,
    SecurityHeaders,
    TokenAuth,
    cross_site,
    from_loopback,
    origin_of,
)
from spakky_saga.console.waiting import escalation_of, signal_rows, wait_of
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.context import idempotency_key
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import AbstractSpakkySagaError
from spakky_saga.events import SagaEventKind
from spakky_saga.query import SagaPage, SagaQuery, SagaQueryError
from spakky_saga.store import SagaRecord, SignalStore, StoredEvent, StoredStatus
from spakky_saga.timeline import TimelineRow, format_duration, rows_from_events

_GANTT_WIDTH: Final = 1000.0


class ConsoleConfigurationError(AbstractSpakkySagaError, TypeError):
    """`create_console_app` was given a store the console cannot read (one without the
    `SagaConsoleStore` queries), or an engine without a store."""

    message = "The console cannot be built from that"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ", timespec="seconds")


_STARTS: Final = {
    SagaEventKind.STEP_STARTED.value: False,
    SagaEventKind.COMPENSATION_STARTED.value: True,
}


def _keys(saga_id: str, events: tuple[StoredEvent, ...]) -> dict[int, str]:
    """The idempotency key of each attempt and compensation the log started, by entry."""
    return {
        e.seq: idempotency_key(saga_id, e.step_key, e.step, e.attempt, _STARTS[e.kind])
        for e in events
        if e.kind in _STARTS and e.step_key is not None and e.step is not None
    }


def _bars(rows: list[TimelineRow]) -> list[dict[str, Any]]:
    """Each timeline row with its Gantt bar (SVG coordinates on a 0..1000 axis)."""
    span = max((r.start + r.elapsed for r in rows), default=0.0) or 1.0
    return [
        {
            "row": row,
            "x": round(row.start / span * _GANTT_WIDTH, 1),
            "width": max(round(row.elapsed / span * _GANTT_WIDTH, 1), 3.0),
            "kind": row.status.lower(),
            "offset": format_duration(row.start),
            "took": format_duration(row.elapsed),
        }
        for row in rows
    ]


def _text(form: FormData, field: str) -> str:
    value = form.get(field)
    return value if isinstance(value, str) else ""


class _Console:
    """The console's state (store, engine, auth, templates) and its request handlers."""

    def __init__(
        self,
        store: SagaConsoleStore,
        engine: SagaEngine | None,
        auth: ConsoleAuth,
        open_local_viewing: bool,
        refresh_seconds: float,
    ) -> None:
        self.store = store
        self.engine = engine
        self.auth = auth
        self.token_login = isinstance(auth, TokenAuth)
        self.open_local_viewing = open_local_viewing
        self.refresh_seconds = refresh_seconds
        self.csrf = CsrfTokens()
        self.templates = Environment(
            loader=PackageLoader("spakky_saga.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when

    # --- rendering and gates ---------------------------------------------------------------

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        page = self.templates.get_template(template).render(
            request=request,
            url=request.url_for,
            saga_url=lambda saga_id: request.url_for("saga", saga_id=quote(saga_id, safe="")),
            refresh_seconds=self.refresh_seconds,
            token_login=self.token_login,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)

    async def viewer(self, request: Request) -> tuple[str | None, Response | None]:
        """The operator (None: anonymous, on loopback), or the response refusing the view."""
        operator = await self.auth(request)
        if operator is not None or (self.open_local_viewing and from_loopback(request)):
            return operator, None
        return None, self.refusal(request, 401, "Log in to view sagas from another machine.")

    def refusal(self, request: Request, status_code: int, why: str) -> HTMLResponse:
        return self.render(request, "refused.html", status_code, why=why)

    # --- pages -----------------------------------------------------------------------------

    async def filtered(self, request: Request) -> tuple[str | None, ListFilter] | Response:
        """The viewer and the list filter the URL gives, or the response refusing either."""
        operator, refused = await self.viewer(request)
        if refused is not None:
            return refused
        try:
            chosen = list_filter(request.query_params, request.query_params.getlist("status"))
        except SagaQueryError as error:
            return self.refusal(request, 400, str(error))
        return operator, chosen

    async def saga_list(self, request: Request) -> Response:
        filtered = await self.filtered(request)
        if isinstance(filtered, Response):
            return filtered
        operator, chosen = filtered
        page = await self.store.query(chosen.query)
        counts = await self.store.count_by_status(chosen.query)
        base = {k: v for k, v in chosen.form.items() if v}
        this_filter = chosen.url_query()
        return self.render(
            request,
            "list.html",
            operator=operator,
            page=page,
            counts=[(s.value, counts.get(s, 0)) for s in StoredStatus],
            total=sum(counts.values()),
            form=chosen.form,
            chosen=chosen.statuses,
            status_link=lambda status: "?" + urlencode({**base, "status": status}),
            all_link="?" + urlencode(base),
            next_link=None
            if page.next is None
            else f"{this_filter}&{urlencode({'after': page.next.encode()})}",
            this_filter=this_filter,
            bulk_actions=[a for a in Action if a.bulk],
            first_page=chosen.query.after is None,
        )

    def flow_changed(self, record: SagaRecord) -> bool | None:
        """Whether the application's flow for `record`'s saga differs from the one it started
        with (recovery refuses it); None when the console cannot tell (no engine, or the name
        is not registered)."""
        if self.engine is None:
            return None
        try:
            registered = self.engine.registered_fingerprint(record.saga_name)
        except Exception:  # the application's flow function raised: cannot tell
            return None
        return None if registered is None else registered != record.fingerprint

    async def attention(self, request: Request) -> Response:
        operator, refused = await self.viewer(request)
        if refused is not None:
            return refused
        failed = await self.store.query(
            SagaQuery(statuses=(StoredStatus.COMPENSATION_FAILED,), limit=100)
        )
        stuck = await self.store.query(SagaQuery(statuses=(StoredStatus.STUCK,), limit=100))
        stale = await self.store.query(SagaQuery(stale_at=time.time(), limit=100))
        changed = [r for r in stale.records if self.flow_changed(r)]
        stale = SagaPage([r for r in stale.records if r not in changed], stale.next)
        # retry compensation refuses a changed flow too: those rows say so
        changed_ids = {r.saga_id for r in changed}
        changed_ids.update(r.saga_id for r in failed.records if self.flow_changed(r))
        unknown = (
            " (start the console with --app to tell which sagas' flow changed)"
            if self.engine is None
            else ""
        )
        escalated, overdue = await self.waiting_attention()
        return self.render(
            request,
            "attention.html",
            operator=operator,
            changed=changed_ids,
            sections=[
                (
                    "Compensation failed",
                    "A compensation failed: repair the participant, then retry compensation.",
                    failed,
                ),
                (
                    "Stuck past the pivot",
                    "A step after the flow's point of no return failed for good; nothing was "
                    "compensated: finish the saga's remaining steps by hand.",
                    stuck,
                ),
                (
                    "Waiting for an operator's decision",
                    "A step failed and its Escalate() strategy asks an operator: open the saga "
                    "and answer (retry the step, skip it, or compensate). Failed step and error "
                    "are the escalated step's.",
                    escalated,
                ),
                (
                    "Waits past their wake-up time",
                    "WAITING sagas whose wake-up time passed (a wait's deadline, a sleep's end, "
                    "or a signal or cancel request that woke them) and that no engine resumed "
                    "yet: an engine that serves recovery on the store (engine.serve(), "
                    "spakky-saga recover) takes them at its next pass; none is running if they "
                    "stay here.",
                    overdue,
                ),
                (
                    "Flow changed",
                    "Unfinished sagas whose flow the application changed since they started "
                    "(their fingerprint differs from the registered flow's): recovery refuses "
                    "them. Deploy the old flow under their name to recover them, or recover "
                    "them compensating by name (spakky-saga recover --compensate-by-name).",
                    SagaPage(changed, None),
                ),
                (
                    "Unfinished, nobody recovering",
                    "Unfinished sagas whose engine's lease expired (or that nobody holds): "
                    "recover them (a saga whose name no engine registers stays here too)"
                    + unknown
                    + ".",
                    stale,
                ),
            ],
        )

    async def waiting_attention(self) -> tuple[SagaPage, SagaPage]:
        """The WAITING sagas an operator must answer (escalated; of the 100 least recently
        updated WAITING sagas, each read with its log), shown with the escalated step and
        its error; and the waits whose wake-up time passed with nobody resuming them (the
        100 most overdue)."""
        waiting = await self.store.query(
            SagaQuery(statuses=(StoredStatus.WAITING,), descending=False, limit=100)
        )
        escalated: list[SagaRecord] = []
        for listed in waiting.records:
            record = await self.store.load(listed.saga_id)
            escalation = None if record is None else escalation_of(record.events)
            if record is not None and escalation is not None:
                error = f"{escalation.error_type}: {escalation.error}"
                escalated.append(replace(record, failed_step=escalation.step, error=error))
        due = await self.store.wake_times(due_by=time.time(), limit=100)
        overdue = [r for r in [await self.store.load(i) for i in due] if r is not None]
        return SagaPage(escalated, waiting.next), SagaPage(overdue, None)

    async def nodes(self, request: Request) -> Response:
        operator, refused = await self.viewer(request)
        if refused is not None:
            return refused
        return self.render(
            request,
            "nodes.html",
            operator=operator,
            nodes=await self.store.nodes(),
            now=time.time(),
        )

    async def saga(self, request: Request) -> Response:
        operator, refused = await self.viewer(request)
        if refused is not None:
            return refused
        saga_id = request.path_params["saga_id"]
        record = await self.store.load(saga_id)
        if record is None:
            return self.refusal(request, 404, f"No saga {saga_id!r} in this store.")
        finished = not record.status.unfinished
        signals = await self.store.signals(saga_id) if isinstance(self.store, SignalStore) else []
        rows = signal_rows(record, signals)
        wake_at = None
        if record.status is StoredStatus.WAITING:
            wake_at = (await self.store.wake_times([saga_id])).get(saga_id)
        types = signal_types(self.engine, record.saga_name)
        waits = None if self.engine is None else waits_of(self.engine, record.saga_name)
        actions = {a: availability(a, record, self.engine, time.time()) for a in Action}
        return self.render(
            request,
            "saga.html",
            operator=operator,
            record=record,
            data=highlight_json(record.data),
            flow=flow_items(record.structure, record.events, finished=finished),
            marks=MARKS,
            flow_changed=self.flow_changed(record),
            bars=_bars(rows_from_events(record.events, finished=finished)),
            events=record.events,
            errors=[e for e in record.events if e.error_type is not None],
            keys=_keys(saga_id, record.events),
            trail=await self.store.audit_trail(saga_id),
            actions=[v for a, v in actions.items() if a.bulk],
            resolve=actions[Action.RESOLVE],
            send=actions[Action.SIGNAL],
            decisions=DECISIONS,
            signal_types=sorted(types),
            wait=wait_of(record, rows, wake_at, waits),
            signals=rows,
            csrf=None if operator is None else self.csrf.token_for(operator),
            lease_live=record.owner is not None and (record.lease_expires or 0) >= time.time(),
        )

    async def acting(self, request: Request) -> tuple[str, FormData] | Response:
        """The operator posting an action form, and the form; or the response refusing it
        (another site, no login, a missing or stale CSRF token)."""
        if cross_site(request):
            return self.refusal(request, 403, "Refused: the request came from another site.")
        operator = await self.auth(request)
        if operator is None:
            return self.refusal(request, 401, "Log in to act on sagas.")
        form = await request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not self.csrf.valid(operator, token):
            why = "Refused: the form's CSRF token is missing or stale; reload the page."
            return self.refusal(request, 403, why)
        return operator, form

    async def act(self, request: Request) -> Response:
        acting = await self.acting(request)
        if isinstance(acting, Response):
            return acting
        operator = acting[0]
        saga_id = request.path_params["saga_id"]
        try:
            action = Action(request.path_params["action"])
        except ValueError:
            return self.refusal(request, 404, "No such action.")
        record = await self.store.load(saga_id)
        if record is None:
            return self.refusal(request, 404, f"No saga {saga_id!r} in this store.")
        form = acting[1]
        given = ActionInput(*(_text(form, f) for f in ("decision", "type", "payload", "signal_id")))
        await perform(
            action,
            saga_id,
            self.store,
            record,
            self.engine,
            by=operator,
            origin=origin_of(request),
            given=given,
        )
        return RedirectResponse(
            request.url_for("saga", saga_id=quote(saga_id, safe="")), status_code=303
        )

    async def bulk(self, request: Request) -> Response:
        """GET: the dry run of an action on every saga of the list's filter (what it would do,
        to how many); POST (its confirm form): run it on the sagas the dry run counted."""
        try:
            action = Action(request.path_params["action"])
        except ValueError:
            return self.refusal(request, 404, "No such action.")
        if not action.bulk:
            return self.refusal(request, 404, f"{action.label} is not a bulk action.")
        if request.method == "POST":
            return await self.bulk_run(request, action)
        filtered = await self.filtered(request)
        if isinstance(filtered, Response):
            return filtered
        operator, chosen = filtered
        plan = await plan_bulk(action, self.store, chosen.query, self.engine, time.time())
        return self.render(
            request,
            "bulk.html",
            operator=operator,
            plan=plan,
            limit=BULK_LIMIT,
            back=chosen.url_query(),
            csrf=None if operator is None else self.csrf.token_for(operator),
        )

    async def bulk_run(self, request: Request, action: Action) -> Response:
        acting = await self.acting(request)
        if isinstance(acting, Response):
            return acting
        operator, form = acting
        saga_ids = [i for i in form.getlist("saga") if isinstance(i, str)][:BULK_LIMIT]
        origin = origin_of(request)
        done: list[tuple[str, str]] = []
        for saga_id in saga_ids:
            record = await self.store.load(saga_id)
            if record is None:
                done.append((saga_id, "refused: no such saga (purged since the dry run?)"))
                continue
            entry = await perform(
                action, saga_id, self.store, record, self.engine, by=operator, origin=origin
            )
            done.append((saga_id, entry.outcome))
        return self.render(request, "bulk_done.html", operator=operator, action=action, done=done)

    async def login(self, request: Request) -> Response:
        if not self.token_login:
            return self.refusal(
                request, 404, "This console uses the host application's authentication."
            )
        if request.method == "GET":
            return self.render(request, "login.html", failed=False)
        if cross_site(request):
            return self.refusal(request, 403, "Refused: the request came from another site.")
        form = await request.form()
        token, name = form.get("token"), form.get("name")
        assert isinstance(self.auth, TokenAuth)
        if not isinstance(token, str) or not self.auth.accepts(token):
            return self.render(request, "login.html", 401, failed=True)
        response = RedirectResponse(request.url_for("list"), status_code=303)
        operator = (name if isinstance(name, str) and name.strip() else "operator").strip()
        for key, value in ((TOKEN_COOKIE, token), (OPERATOR_COOKIE, operator[:80])):
            response.set_cookie(
                key, value, httponly=True, samesite="strict", secure=request.url.scheme == "https"
            )
        return response


def create_console_app(
    store: SagaConsoleStore,
    engine: SagaEngine | None = None,
    *,
    auth: ConsoleAuth | None = None,
    token: str | None = None,
    open_local_viewing: bool = True,
    refresh_seconds: float = 5.0,
) -> Starlette:
    """The operations console on `store`, as an ASGI application.

    `engine` (with its flows registered, on the same store) enables the actions that run
    compensations (recover, retry compensation); without it they are shown disabled, with the
    reason. `auth` is the authentication hook (`async (request) -> operator name | None`; the
    host application's own, when mounted); by default a `TokenAuth(token)` login (with a
    random token nobody knows when `token` is None: actions are then impossible). Read-only
    pages are
    open to loopback clients when `open_local_viewing` (turn it off behind a reverse proxy on
    the same machine: every client is then loopback). The list refreshes itself every
    `refresh_seconds` (0: never).
    """
    if not isinstance(store, SagaConsoleStore):
        raise ConsoleConfigurationError(
            f"create_console_app({type(store).__name__}): the console needs a store with its "
            "queries (SagaConsoleStore: query, count_by_status, audit, audit_trail), as "
            "InMemorySagaStore, SqliteSagaStore and PostgresSagaStore have"
        )
    if engine is not None and engine.store is None:
        raise ConsoleConfigurationError(
            "create_console_app(engine=...): the engine has no store; give the console an "
            "engine built with SagaEngine(store=...) on the console's store"
        )
    console = _Console(store, engine, auth or TokenAuth(token), open_local_viewing, refresh_seconds)
    app = Starlette(
        routes=[
            Route("/", console.saga_list, name="list"),
            Route("/attention", console.attention, name="attention"),
            Route("/nodes", console.nodes, name="nodes"),
            Route("/bulk/{action}", console.bulk, methods=["GET", "POST"], name="bulk"),
            Route("/sagas/{saga_id:path}/{action}", console.act, methods=["POST"], name="act"),
            Route("/sagas/{saga_id:path}", console.saga, name="saga"),
            Route("/login", console.login, methods=["GET", "POST"], name="login"),
            Mount(
                "/static", StaticFiles(packages=[("spakky_saga.console", "static")]), name="static"
            ),
        ],
        middleware=[Middleware(SecurityHeaders)],
    )
    return app
