"""`spakky-saga` (and `python -m spakky_saga`): operations on durable sagas.

    spakky-saga list --store URL [--status STATUS ...] [--name NAME ...] [--since T] [--until T]
                     [--limit N] [--json]
    spakky-saga show SAGA_ID --store URL [--json]
    spakky-saga recover --app MODULE:APP [--wait [SECONDS]] [--limit N] [--compensate-by-name]
                        [--json]
    spakky-saga retry-compensation SAGA_ID --app MODULE:APP [--json]
    spakky-saga cancel SAGA_ID --app MODULE:APP [--json]
    spakky-saga signal SAGA_ID MODULE:TYPE --json PAYLOAD --app MODULE:APP [--signal-id ID]
    spakky-saga resolve SAGA_ID retry|skip|compensate --app MODULE:APP
    spakky-saga purge --store URL --finished-before TIME [--dry-run] [--json]
    spakky-saga graph MODULE:TARGET [--markdown] [--direction TD|LR]
    spakky-saga console --store URL [--app MODULE:APP] [--host 127.0.0.1] [--port 8000]

`list` and `show` only read the store and create nothing; `purge` deletes finished sagas from
an existing store (and creates nothing either). `recover` and `retry-compensation` run
compensations and steps, so they need the application's flows: `--app` names a spakky
application (`SpakkyApplication`, whose container's `SagaEngine` pod its `@Saga()` classes
registered their flows with), a `SagaEngine` whose flows are registered, or a function
returning either. The operator's guide is docs/operations.md; everything an installed user
needs is in `spakky-saga --help` and `spakky-saga COMMAND --help` (the EPILOG below).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import inspect
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from spakky.core.application.application import SpakkyApplication

from spakky_saga._text import error_text, safe_repr
from spakky_saga.cancel import cancel
from spakky_saga.codec import signal_from_json
from spakky_saga.console_store import SagaConsoleStore
from spakky_saga.diagram import to_mermaid
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import (
    SagaFlowChangedError,
    SagaNotRegisteredError,
    SagaSignalError,
    SagaSignalTargetError,
    SagaSignalTypeError,
    SagaStoreError,
)
from spakky_saga.events import SagaEventKind
from spakky_saga.flow import SagaFlow
from spakky_saga.flowchart import DIRECTIONS
from spakky_saga.recovery import RecoveredSaga, RecoveryOutcome
from spakky_saga.saga import AbstractSaga, Saga
from spakky_saga.signals import SignalReceipt
from spakky_saga.store import (
    PURGEABLE,
    UNFINISHED,
    SagaRecord,
    SagaStore,
    SagaStoreNotFoundError,
    StoredEvent,
    StoredStatus,
)
from spakky_saga.stores.postgres import PostgresSagaStore
from spakky_saga.stores.sqlite import SqliteSagaStore
from spakky_saga.timeline import format_duration, format_timeline, rows_from_events

OK: Final = 0
ATTENTION: Final = 1
USAGE: Final = 2
NOT_FOUND: Final = 3
STORE_FAILED: Final = 4

EPILOG: Final = """\
--store is sqlite:////absolute/path/sagas.db, sqlite:///relative.db, a plain file path, or a
PostgreSQL URL (postgresql://user@host/db; --schema for a schema other than public).

--app is MODULE:ATTRIBUTE, importable from the current directory: a spakky application
(SpakkyApplication; the command starts it if it is not started, uses its container's
SagaEngine pod, with the flows its @Saga() classes registered, and stops it at the end), a
SagaEngine(store=...) whose flows are registered, or a function returning either.

exit codes:
  0  done
  1  needs attention: a saga refused by recovery, a compensation that failed (again), a saga
     stuck past its pivot, a saga skipped because another engine's lease on it is live, or
     the code of an --app or graph target failed
  2  wrong usage (the message says what to write instead)
  3  no such saga in the store
  4  the store failed, refused the operation, or does not exist

Each command's options: spakky-saga COMMAND --help.
"""

DEFAULT_WAIT: Final = 300.0
"""How long `recover --wait` waits for live leases to expire, at most, in seconds."""
_POLL_MIN: Final = 0.05
_POLL_MAX: Final = 1.0
_UNLIMITED: Final = 2**31 - 1
_ERROR_WIDTH: Final = 60
"""The error type recovery records on a saga it compensated (SagaInterruptedError)."""


class UsageError(Exception):
    """A command line that cannot work: said on stderr, exit code 2."""


class _NotFound(Exception):
    """No such saga: said on stderr, exit code 3."""


class _NoStore(Exception):
    """A read-only command found no store where --store points: said on stderr, exit code 4."""


class _BrokenTarget(Exception):
    """The code an `--app` or `graph` target runs (its module, constructor, factory, start or
    flow()) failed, or built an invalid flow: said on stderr, exit code 1."""


def open_store(url: str, schema: str = "public", *, create: bool = True) -> SagaConsoleStore:
    """The store a `--store` URL names; `create=False` for read-only commands, which must
    never create a store (or its tables) where there was none."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSagaStore(url, schema=schema, create=create)
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        path = rest.removeprefix("///") if rest.startswith("///") else rest
        if not path or path.startswith("//"):
            raise UsageError(
                f"--store {url}: give a file, as SQLAlchemy URLs do: sqlite:///relative.db or "
                "sqlite:////absolute/path/sagas.db (or just the path)"
            )
        return SqliteSagaStore(path, create=create)
    if "://" in url:
        raise UsageError(
            f"--store {url}: use sqlite:////path/to/sagas.db or postgresql://user@host/db"
        )
    return SqliteSagaStore(url, create=create)


async def open_existing(store: SagaStore) -> None:
    """Open a store built with `create=False` for a read-only command (`list`, `show`): a
    mistyped `--store` or a forgotten `--schema` is said as such, and leaves nothing behind."""
    try:
        await store.open()
    except SagaStoreNotFoundError as error:
        raise _NoStore(str(error)) from error


def _import_target(spec: str, option: str, example: str) -> Any:
    """The object `module:attribute` names; the module's own failure is the target's."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{option} {spec}: write MODULE:ATTRIBUTE, e.g. {example}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"{option} {spec}: cannot import it ({error_text(error)})") from error
    except Exception as error:  # the module's own code failed
        raise _BrokenTarget(
            f"{option} {spec}: importing {module_name} raised {error_text(error)}"
        ) from error
    return target


@dataclass
class OperatedApp:
    """What `--app` names: the engine `recover` and `retry-compensation` run on, and the
    spakky application it came from, if any (stopped at the end when the command started it).
    """

    spec: str
    engine: SagaEngine
    application: SpakkyApplication | None = None
    started_here: bool = False

    @property
    def store(self) -> SagaStore:
        store = self.engine.store
        assert store is not None  # load_app refuses an engine without one
        return store

    async def aclose(self) -> None:
        try:
            await self.engine.aclose()
            await self.store.close()  # idempotent: also when only the command opened it
        finally:
            if self.started_here and self.application is not None:
                self.application.stop()


_APP_EXPECTED: Final = (
    "expected a SagaEngine with a store, a spakky application (SpakkyApplication) whose "
    "container has one, or a function returning either"
)


def load_app(spec: str) -> OperatedApp:
    """The engine (and application) `--app module:attribute` names."""
    target = _import_target(spec, "--app", "myapp.main:app or myapp.sagas:engine")
    if inspect.isclass(target):
        if Saga.exists(target) or issubclass(target, AbstractSaga):
            raise UsageError(
                f"--app {spec}: {target.__qualname__} is a saga class; its flow is registered "
                "with the engine when the application's container creates it, so pass the "
                "application (MODULE:app, a SpakkyApplication) instead, or a SagaEngine whose "
                "flows you register"
            )
        raise UsageError(f"--app {spec}: {target.__qualname__} is a class; {_APP_EXPECTED}")
    if not isinstance(target, SagaEngine | SpakkyApplication) and callable(target):
        name = spec.partition(":")[2]
        if inspect.iscoroutinefunction(target):
            raise UsageError(f"--app {spec}: {name} is an async function; {_APP_EXPECTED}")
        required = _required_arguments(target)
        if required:
            raise UsageError(
                f"--app {spec}: {name} takes arguments ({', '.join(required)}) the command "
                f"cannot give; {_APP_EXPECTED}, without arguments"
            )
        try:
            target = target()
        except Exception as error:
            raise _BrokenTarget(f"--app {spec}: {name}() raised {error_text(error)}") from error
    if isinstance(target, SpakkyApplication):
        return _from_application(spec, target)
    if not isinstance(target, SagaEngine):
        raise UsageError(
            f"--app {spec}: {_APP_EXPECTED}; got {safe_repr(target)} ({type(target).__name__})"
        )
    if target.store is None:
        raise UsageError(
            f"--app {spec}: expected a SagaEngine with a store (SagaEngine(store=...)), got one "
            "without: an in-memory engine has nothing to recover"
        )
    return OperatedApp(spec, target)


def _from_application(spec: str, application: SpakkyApplication) -> OperatedApp:
    """The application's `SagaEngine` pod, with every `@Saga()` pod created (each registers
    its flow with the engine). An application that is not started is started, so that its
    pods are what they are in production (post-processors and aspects applied), and stopped
    when the command ends."""
    started_here = not application.application_context.is_started
    try:
        if started_here:
            application.start()
        engine = application.container.get_or_none(SagaEngine)
        if engine is not None:  # lazy and prototype sagas too: each registers its flow
            application.container.find(lambda pod: isinstance(pod, Saga))
    except Exception as error:
        if started_here and application.application_context.is_started:
            application.stop()
        raise _BrokenTarget(
            f"--app {spec}: starting the application raised {error_text(error)}"
        ) from error
    if engine is None or engine.store is None:
        if started_here:
            application.stop()
        what = "no SagaEngine pod" if engine is None else "a SagaEngine pod without a store"
        raise UsageError(
            f"--app {spec}: the application's container has {what}; register a @Pod() "
            "function returning SagaEngine(store=...) and add it to the application"
        )
    return OperatedApp(spec, engine, application, started_here)


def _record_json(record: SagaRecord) -> dict[str, Any]:
    return {
        "saga_id": record.saga_id,
        "saga_name": record.saga_name,
        "status": record.status.value,
        "owner": record.owner,
        "lease_expires": record.lease_expires,
        "created": record.created,
        "updated": record.updated,
        "failed_step": record.failed_step,
        "error": record.error,
    }


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _moment(text: str | None, option: str) -> float | None:
    """An ISO date or time (`2024-05-01`, `2024-05-01T12:30`, with an offset or not: UTC)
    as epoch seconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text}: not an ISO date or time; write e.g. 2024-05-01, "
            "2024-05-01T12:30 (UTC) or 2024-05-01T12:30+02:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _clip(text: str | None, width: int) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


async def _list(args: argparse.Namespace) -> int:
    since = _moment(args.since, "--since")
    until = _moment(args.until, "--until")
    filtered = bool(args.name) or since is not None or until is not None
    store = open_store(args.store, args.schema, create=False)
    try:
        await open_existing(store)
        statuses = [StoredStatus(s) for s in args.status]
        # The store filters by status only: with other filters, read every row (without its
        # log) and filter here, so that --limit counts matching sagas.
        records = await store.list(statuses, _UNLIMITED if filtered else args.limit)
    finally:
        await store.close()
    records = [
        r
        for r in records
        if (not args.name or r.saga_name in args.name)
        and (since is None or r.updated >= since)
        and (until is None or r.updated < until)
    ][: args.limit]
    if args.json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return OK
    if not records:
        print("no sagas")
        return OK
    table = [("saga id", "name", "status", "updated", "owner", "failed step", "error")]
    table += [
        (
            r.saga_id,
            r.saga_name,
            r.status.value,
            _when(r.updated),
            r.owner or "-",
            r.failed_step or "-",
            _clip(r.error, _ERROR_WIDTH),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return OK


async def _purge(args: argparse.Namespace) -> int:
    before = _moment(args.finished_before, "--finished-before")
    assert before is not None  # a required option
    store = open_store(args.store, args.schema, create=False)
    try:
        await open_existing(store)
        gone = await store.purge(before, dry_run=args.dry_run)
    finally:
        await store.close()
    when = _when(before)
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "finished_before": when,
                    "count": len(gone),
                    "saga_ids": list(gone),
                },
                indent=2,
            )
        )
        return OK
    statuses = ", ".join(s.value for s in PURGEABLE)
    if args.dry_run:
        print(
            f"would purge {len(gone)} saga(s) finished ({statuses}) before {when}; nothing "
            "was deleted: run the same command without --dry-run to delete them"
        )
    else:
        print(f"purged {len(gone)} saga(s) finished ({statuses}) before {when}")
    return OK


def _original_error(record: SagaRecord) -> str | None:
    """The error that failed the saga, from its log, with its type: the failed step's own
    error (also when the row holds recovery's wrapper, "was interrupted ... and was
    compensated on recovery")."""
    if record.failed_step is None:
        return None
    for event in reversed(record.events):
        if event.kind == SagaEventKind.STEP_FAILED.value and event.step == record.failed_step:
            return f"{event.error_type}: {event.error}" if event.error_type else event.error
    return None


def _recoveries(events: Sequence[StoredEvent]) -> list[tuple[float, str]]:
    """Each time the saga was taken up again, and why: "recovered" after its engine stopped
    before it finished, "retried" when `retry-compensation` re-ran failed compensations of a
    saga that had ended."""
    found: list[tuple[float, str]] = []
    ended = False
    for event in events:
        if event.kind in (SagaEventKind.SAGA_FINISHED.value, SagaEventKind.SAGA_ABORTED.value):
            ended = True
        elif event.kind == SagaEventKind.SAGA_RECOVERED.value:
            found.append((event.at, "retried" if ended else "recovered"))
            ended = False
    return found


_RECOVERY_TEXT: Final = {
    "recovered": "recovered: its engine had stopped before the saga finished",
    "retried": "retried: its failed compensations ran again (retry-compensation)",
}


async def _show(args: argparse.Namespace) -> int:
    store = open_store(args.store, args.schema, create=False)
    try:
        await open_existing(store)
        record = await store.load(args.saga_id)
    finally:
        await store.close()
    if record is None:
        raise _NotFound(f"no saga {args.saga_id} in the store")
    rows = rows_from_events(record.events, finished=not record.status.unfinished)
    original = _original_error(record)
    recoveries = _recoveries(record.events)
    if args.json:
        print(
            json.dumps(
                _record_json(record)
                | {
                    "original_error": original,
                    "recoveries": [{"at": at, "what": what} for at, what in recoveries],
                    "cancel_requested": None
                    if record.cancel_request is None
                    else {"by": record.cancel_request.by, "at": record.cancel_request.at},
                    "data": json.loads(record.data),
                    "timeline": [r._asdict() for r in rows],
                },
                indent=2,
            )
        )
        return OK
    error = original or record.error
    print(f"saga {record.saga_id} ({record.saga_name}): {record.status.value}")
    print(f"  started {_when(record.created)}, updated {_when(record.updated)}")
    if record.owner:
        print(f"  owned by {record.owner} until {_when(record.lease_expires)}")
    if record.failed_step:
        print(f'  failed step "{record.failed_step}": {error}')
    elif error:
        print(f"  error: {error}")
    if record.status is StoredStatus.STUCK:
        print(f"  {_STUCK_ADVICE}")
    if record.status is StoredStatus.WAITING:
        print(f"  {_waiting_text(record.events)}")
    if record.cancel_request is not None:
        by, at = record.cancel_request
        print(f"  {_when(at)} cancel requested by {by} (spakky-saga cancel)")
    for at, what in recoveries:
        print(f"  {_when(at)} {_RECOVERY_TEXT[what]}")
    print(f"  data: {record.data}")
    print()
    print(format_timeline(rows, pivot=_pivot_steps(record.structure)))
    return OK


def _waiting_text(events: Sequence[StoredEvent]) -> str:
    """What a WAITING saga waits in, since when, and what wakes it."""
    step, since = "a wait", None
    for event in events:
        if event.kind == SagaEventKind.SAGA_SUSPENDED.value:
            step, since = f'"{event.step}"', event.at
    when = "" if since is None else f" since {_when(since)}"
    return (
        f"waiting in {step}{when}, suspended in the store: any engine on it resumes it when "
        "its signal arrives (`spakky-saga signal`) or its time comes"
    )


_STUCK_ADVICE: Final = (
    "stuck past its pivot (the point of no return): a step after it failed for good and "
    "nothing was compensated; finish the saga's remaining steps by hand"
)


def _pivot_steps(structure: str) -> tuple[str, ...]:
    """The names of the pivot's steps, as the saga's recorded structure has them."""
    for item in json.loads(structure):
        if item.get("pivot"):
            members = item.get("group") or [item]
            return tuple(member["step"] for member in members)
    return ()


def _saga_error(error: BaseException | None, app: OperatedApp) -> str | None:
    """What went wrong with one saga, in the command's terms (its options, not the API's)."""
    if error is None:
        return None
    if isinstance(error, SagaFlowChangedError) and error.saga_name is not None:
        return (
            f'the flow registered as "{error.saga_name}" is not the flow this saga started '
            f"with ({'; '.join(error.changes)}); put the old definition back to recover it, or "
            f"run `spakky-saga recover --app {app.spec} --compensate-by-name` to compensate its "
            "committed steps by step name"
        )
    return error_text(error)


def _unregistered(saga: RecoveredSaga) -> bool:
    """Refused because no flow is registered under its name."""
    return saga.outcome is RecoveryOutcome.REFUSED and isinstance(
        saga.error, SagaNotRegisteredError
    )


def _report(
    sagas: Sequence[RecoveredSaga],
    held: Sequence[SagaRecord],
    app: OperatedApp,
    as_json: bool,
    waited: float | None = None,
) -> int:
    now = time.time()
    if as_json:
        items: list[dict[str, Any]] = [
            {
                "saga_id": s.saga_id,
                "saga_name": s.saga_name,
                "outcome": s.outcome.value,
                "status": None if s.result is None else s.result.status.value,
                "error": _saga_error(s.error, app),
            }
            for s in sagas
        ]
        items += [
            {
                "saga_id": r.saga_id,
                "saga_name": r.saga_name,
                "outcome": "skipped",
                "status": r.status.value,
                "error": None,
                "owner": r.owner,
                "lease_expires": r.lease_expires,
            }
            for r in held
        ]
        print(json.dumps(items, indent=2))
    elif not sagas and not held:
        print("nothing to recover")
    for saga in [] if as_json else sagas:
        detail = _saga_error(saga.error, app)
        print(
            f"{saga.saga_id} ({saga.saga_name}): {saga.outcome}" + (f": {detail}" if detail else "")
        )
        if saga.outcome is RecoveryOutcome.COMPENSATION_FAILED:
            print(
                "  repair the participant, then run: spakky-saga retry-compensation "
                f"{saga.saga_id} --app {app.spec}"
            )
        elif saga.outcome is RecoveryOutcome.STUCK:
            print(f"  {_STUCK_ADVICE}")
    for record in [] if as_json else held:
        left = (record.lease_expires or now) - now
        when = f"in {format_duration(left)}" if left > 0 else "now"
        print(
            f"{record.saga_id} ({record.saga_name}): skipped, {record.status.value}: engine "
            f"{record.owner} holds its lease until {_when(record.lease_expires)} "
            f"(recoverable {when})"
        )
    if app.application is None and any(_unregistered(s) for s in sagas):
        print(
            f"spakky-saga: hint: the engine --app {app.spec} gave has no flow registered for "
            "these sagas. In a spakky application, @Saga() classes register their flows when "
            "the container creates them: pass the application instead (--app MODULE:app, "
            "the SpakkyApplication), or register the flows in the engine's factory "
            '(engine.register("Name", flow))',
            file=sys.stderr,
        )
    if held:
        if waited is None:
            advice = (
                f"if that engine crashed, wait with `spakky-saga recover --app {app.spec} "
                "--wait`, or run recover again after the time shown"
            )
        else:
            advice = (
                f"after waiting {format_duration(waited)} their leases are still live: wait "
                "longer (--wait SECONDS), or, if their engine keeps renewing them, it is alive "
                "and running them"
            )
        print(
            f"spakky-saga: {len(held)} unfinished saga(s) skipped: another engine's lease on "
            f"them is live (it runs them, or stopped less than a lease ago); {advice}",
            file=sys.stderr,
        )
    attention = held or any(s.outcome.needs_attention for s in sagas)
    return ATTENTION if attention else OK


async def _held_elsewhere(app: OperatedApp, limit: int) -> list[SagaRecord]:
    """Unfinished sagas another engine holds a lease on: what recover() could not claim."""
    records = await app.store.list(UNFINISHED, limit)
    return [
        r
        for r in records
        if r.owner is not None and r.owner != app.engine.owner and r.lease_expires is not None
    ]


async def _recover(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        started = time.monotonic()
        deadline = None if args.wait is None else started + args.wait
        recovered: list[RecoveredSaga] = []
        announced: set[str] = set()
        while True:
            report = await app.engine.recover(
                limit=args.limit, compensate_by_name=args.compensate_by_name
            )
            recovered.extend(report.sagas)
            held = await _held_elsewhere(app, args.limit)
            left = 0.0 if deadline is None else deadline - time.monotonic()
            if not held or left <= 0:
                break
            for record in held:
                if record.saga_id not in announced:
                    announced.add(record.saga_id)
                    print(
                        f"waiting for {record.saga_id} ({record.saga_name}): engine "
                        f"{record.owner} holds its lease until {_when(record.lease_expires)}",
                        file=sys.stderr,
                        flush=True,
                    )
            soonest = min(r.lease_expires or 0.0 for r in held) - time.time()
            await asyncio.sleep(min(left, max(_POLL_MIN, min(soonest + _POLL_MIN, _POLL_MAX))))
    finally:
        await app.aclose()
    waited = None if deadline is None else time.monotonic() - started
    return _report(recovered, held, app, args.json, waited)


_NOT_RETRYABLE: Final = {
    StoredStatus.RUNNING: "it is unfinished: `spakky-saga recover` finishes it",
    StoredStatus.COMPENSATING: "it is unfinished: `spakky-saga recover` finishes it",
    StoredStatus.COMPLETED: "it completed, so there is nothing to compensate",
    StoredStatus.STUCK: "it is stuck past its pivot (the point of no return), where nothing "
    "is compensated: finish its remaining steps by hand",
    StoredStatus.WAITING: "it is waiting (suspended in a wait or for an operator's decision): "
    "`spakky-saga signal` or `spakky-saga resolve` resumes it",
}


async def _retry(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        await app.store.open()
        record = await app.store.load(args.saga_id)
        if record is None:
            raise _NotFound(f"no saga {args.saga_id} in the store")
        if record.status is not StoredStatus.COMPENSATION_FAILED:
            why = _NOT_RETRYABLE.get(record.status, "its compensations all ran")
            raise UsageError(
                f"saga {record.saga_id} ({record.saga_name}) is {record.status.value}: only "
                f"COMPENSATION_FAILED sagas can be retried; {why}"
            )
        outcome = await app.engine.retry_compensation(args.saga_id)
    finally:
        await app.aclose()
    return _report([outcome], [], app, args.json)


_NOT_CANCELLABLE: Final = {
    StoredStatus.COMPENSATING: "it is being rolled back already: its engine (or `spakky-saga "
    "recover --app {app}`) finishes the rollback; follow it with `spakky-saga show {id} "
    "--store STORE`",
    StoredStatus.COMPLETED: "it completed, so there is nothing to stop; undo its effects with "
    "a saga of their own",
    StoredStatus.FAILED: "it failed and was rolled back already",
    StoredStatus.TIMED_OUT: "it timed out and was rolled back already",
    StoredStatus.CANCELLED: "it was cancelled already",
    StoredStatus.COMPENSATION_FAILED: "a compensation failed: repair the participant, then run "
    "`spakky-saga retry-compensation {id} --app {app}`",
    StoredStatus.STUCK: "it is stuck past its pivot (the point of no return), where nothing is "
    "compensated: finish its remaining steps by hand",
}


def _operator() -> str:
    """Who runs the command, as the saga's log records a cancel request: user@host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def _cancel(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    by = _operator()
    try:
        await app.store.open()
        # Its engine is dead (its lease expired), it has none, or it waits suspended (the
        # request woke it): claimed and compensated now. Else its engine is alive: this
        # claims nothing, and the engine acts on the request.
        done = await cancel(app.store, args.saga_id, by, app.engine)
    finally:
        await app.aclose()
    record = done.record
    if record is None:
        raise _NotFound(f"no saga {args.saga_id} in the store")
    if done.refused:
        why = _NOT_CANCELLABLE[record.status].format(id=record.saga_id, app=app.spec)
        raise UsageError(
            f"saga {record.saga_id} ({record.saga_name}) is {record.status.value}: only "
            f"RUNNING and WAITING sagas can be cancelled; {why}"
        )
    if done.recovered is not None:
        return _cancelled_here(done.recovered, app, args.json)
    request = record.cancel_request
    assert request is not None  # kept by request_cancel on a RUNNING saga
    if args.json:
        print(
            json.dumps(
                {
                    "saga_id": record.saga_id,
                    "saga_name": record.saga_name,
                    "outcome": "requested",
                    "owner": record.owner,
                    "requested_by": request.by,
                    "requested_at": _when(request.at),
                },
                indent=2,
            )
        )
        return OK
    print(
        f"{record.saga_id} ({record.saga_name}): cancel requested by {request.by} at "
        f"{_when(request.at)}; engine {record.owner} runs it and cancels it within a lease (it "
        "reads requests when it renews its lease, every third of a lease): it compensates "
        f"the committed steps and ends CANCELLED; follow it with `spakky-saga show "
        f"{record.saga_id} --store STORE`"
    )
    return OK


async def _signal(args: argparse.Namespace) -> int:
    signal_type = _import_target(args.type, "TYPE", "orders.signals:PaymentConfirmed")
    if not isinstance(signal_type, type):
        raise UsageError(f"{args.type} is {safe_repr(signal_type)}, not a class")
    try:
        payload = signal_from_json(signal_type, args.payload, "--json")
    except SagaSignalTypeError as error:
        raise UsageError(str(error)) from error
    receipt = await _send(
        args, lambda engine: engine.signal(args.saga_id, payload, signal_id=args.signal_id)
    )
    repeat = " (a repeat: it was stored before; nothing new)" if receipt.duplicate else ""
    print(
        f"{args.saga_id}: signal {receipt.signal_id} ({signal_type.__qualname__}) stored{repeat}; "
        "the saga takes it at its wait (a WAITING saga is resumed by the next recovery pass "
        "of an engine on the store, or `spakky-saga recover --app APP`)"
    )
    return OK


async def _send(
    args: argparse.Namespace, send: Callable[[SagaEngine], Awaitable[SignalReceipt]]
) -> SignalReceipt:
    """Send a signal (or a decision) with the `--app` engine; a refusal is a usage error, an
    unknown saga "not found"."""
    app = load_app(args.app)
    try:
        await app.store.open()
        return await send(app.engine)
    except SagaSignalTargetError as error:
        if error.status is None:
            raise _NotFound(str(error)) from error
        raise UsageError(str(error)) from error
    except SagaSignalError as error:
        raise UsageError(str(error)) from error
    finally:
        await app.aclose()


async def _resolve(args: argparse.Namespace) -> int:
    by = _operator()
    receipt = await _send(args, lambda engine: engine.resolve(args.saga_id, args.decision, by=by))
    print(
        f"{args.saga_id}: decision {args.decision!r} by {by} stored ({receipt.signal_id}); the "
        "saga takes it at its escalated step (a WAITING saga is resumed by the next recovery "
        "pass of an engine on the store, or `spakky-saga recover --app APP`)"
    )
    return OK


def _cancelled_here(saga: RecoveredSaga, app: OperatedApp, as_json: bool) -> int:
    """What `cancel` did with a saga whose engine was dead: compensated it (or not)."""
    detail = None if saga.outcome is RecoveryOutcome.CANCELLED else _saga_error(saga.error, app)
    if as_json:
        print(
            json.dumps(
                {
                    "saga_id": saga.saga_id,
                    "saga_name": saga.saga_name,
                    "outcome": saga.outcome.value,
                    "error": detail,
                },
                indent=2,
            )
        )
    elif saga.outcome is RecoveryOutcome.CANCELLED:
        print(
            f"{saga.saga_id} ({saga.saga_name}): cancelled: its engine had stopped; its "
            "committed steps were compensated and it is CANCELLED"
        )
    else:
        print(
            f"{saga.saga_id} ({saga.saga_name}): {saga.outcome}" + (f": {detail}" if detail else "")
        )
        if saga.outcome is RecoveryOutcome.COMPENSATION_FAILED:
            print(
                "  repair the participant, then run: spakky-saga retry-compensation "
                f"{saga.saga_id} --app {app.spec}"
            )
        elif saga.outcome in (RecoveryOutcome.COMPLETED, RecoveryOutcome.STUCK):
            print(
                "  past its pivot (the point of no return) a saga cannot be cancelled: "
                "recovery took it forward instead"
            )
        else:
            print(
                "  the cancel request is kept: the engine that recovers it compensates it; "
                f"once the cause is fixed, run: spakky-saga recover --app {app.spec}"
            )
    return OK if saga.outcome is RecoveryOutcome.CANCELLED else ATTENTION


def load_flow(spec: str) -> SagaFlow[Any]:
    """The flow `module:attribute` names: a SagaFlow, a saga class whose constructor takes no
    arguments, a saga instance (anything with a `flow()` method), or a function returning a
    flow or a saga."""
    target = _import_target(spec, "graph", "myapp.sagas:order_flow or myapp.sagas:CreateOrderSaga")
    attribute = spec.partition(":")[2]
    if isinstance(target, SagaFlow):
        return target
    if inspect.isclass(target):
        if not callable(getattr(target, "flow", None)):
            raise UsageError(
                f"graph {spec}: class {target.__qualname__} has no flow() method; point at a saga "
                "class, a SagaFlow, or a function returning one"
            )
        required = _required_arguments(target)
        if required:
            raise UsageError(
                f"graph {spec}: {target.__qualname__} takes constructor arguments "
                f"({', '.join(required)}), its dependencies, which the graph command cannot "
                "give; point at its flow instead: a module-level SagaFlow, or a function that "
                "creates the saga (with stand-ins for its dependencies) and returns "
                "saga.flow(), e.g. MODULE:order_flow"
            )
        return _flow_of_saga(_call(target, f"{target.__qualname__}()", spec), spec)
    if not inspect.isroutine(target) and callable(getattr(target, "flow", None)):
        return _flow_of_saga(target, spec)
    if callable(target):
        if inspect.iscoroutinefunction(target):
            raise UsageError(
                f"graph {spec}: {attribute} is an async function, and the graph command runs "
                "no async code; point at a SagaFlow or a plain function returning one"
            )
        required = _required_arguments(target)
        if required:
            raise UsageError(
                f"graph {spec}: {attribute} takes arguments ({', '.join(required)}) that the "
                "graph command cannot give; point at a SagaFlow or a function without arguments"
            )
        built = _call(target, f"{attribute}()", spec)
        if isinstance(built, SagaFlow):
            return built
        if callable(getattr(built, "flow", None)):
            return _flow_of_saga(built, spec)
        if inspect.iscoroutine(built):
            built.close()  # never awaited: spare the user a "never awaited" warning
        raise UsageError(
            f"graph {spec}: {attribute}() returned {safe_repr(built)}, expected a SagaFlow or a "
            "saga"
        )
    raise UsageError(
        f"graph {spec}: expected a SagaFlow, a saga class, or a function returning a flow, got "
        f"{safe_repr(target)} ({type(target).__name__})"
    )


def _required_arguments(target: Any) -> list[str]:
    """The parameters a call of `target` with no arguments would miss (none if unknown)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read: try calling it
        return []
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def _call(function: Any, what: str, spec: str) -> Any:
    """`function()`, its failure reported as the target's (exit code 1)."""
    try:
        return function()
    except Exception as error:
        raise _BrokenTarget(f"graph {spec}: {what} raised {error_text(error)}") from error


def _flow_of_saga(saga: Any, spec: str) -> SagaFlow[Any]:
    name = type(saga).__qualname__
    if isinstance(saga, AbstractSaga):
        flow: Any = _call(saga.cached_flow, f"{name}.flow()", spec)  # checks the type too
    else:
        flow = _call(saga.flow, f"{name}.flow()", spec)
    if not isinstance(flow, SagaFlow):
        raise _BrokenTarget(
            f"graph {spec}: {name}.flow() returned {safe_repr(flow)}, expected a SagaFlow"
        )
    return flow


async def _console(args: argparse.Namespace) -> int:
    try:
        from spakky_saga.console.server import serve  # noqa: PLC0415 - the optional extra
    except ImportError as error:
        raise UsageError(
            f"the console needs its web dependencies ({error_text(error)}): "
            "pip install 'spakky-saga-typed[console]'"
        ) from None
    token = args.token or os.environ.get("SPAKKY_SAGA_CONSOLE_TOKEN") or secrets.token_urlsafe(24)
    app = load_app(args.app) if args.app else None
    store = open_store(args.store, args.schema, create=False)
    try:
        await open_existing(store)
        await serve(
            store,
            None if app is None else app.engine,
            host=args.host,
            port=args.port,
            token=token,
            refresh_seconds=args.refresh,
        )
    finally:
        await store.close()
        if app is not None:
            await app.aclose()
    return OK


async def _graph(args: argparse.Namespace) -> int:
    flow = load_flow(args.target)
    text = to_mermaid(flow, direction=args.direction)
    print(f"```mermaid\n{text}\n```" if args.markdown else text)
    return OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number of sagas, 1 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: give a port number, 0 to 65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds, e.g. 60")
    return value


def _console_options(console: argparse.ArgumentParser) -> None:
    console.add_argument(
        "--store", required=True, help="sqlite:////abs/file.db, a path, or postgresql://..."
    )
    console.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
    console.add_argument(
        "--app",
        metavar="MODULE:APP",
        help="a SpakkyApplication, a SagaEngine with a store, or a function returning one: "
        "enables recover and retry compensation (they run the application's compensations)",
    )
    console.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    console.add_argument("--port", type=_port, default=8000, help="port (8000)")
    console.add_argument(
        "--refresh",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often the list refreshes itself while 'live' is checked (5; 0: never)",
    )
    console.add_argument(
        "--token",
        help="the token operators log in with to act (default: $SPAKKY_SAGA_CONSOLE_TOKEN, "
        "else a random one, printed at start)",
    )


def _signal_options(signal: argparse.ArgumentParser) -> None:
    signal.add_argument("saga_id")
    signal.add_argument(
        "type", metavar="MODULE:TYPE", help="the signal's class (a dataclass or pydantic model)"
    )
    signal.add_argument(
        "--json", dest="payload", required=True, metavar="PAYLOAD", help="the signal, as JSON"
    )
    signal.add_argument(
        "--app",
        required=True,
        metavar="MODULE:APP",
        help="a SpakkyApplication, a SagaEngine with a store, or a function returning one",
    )
    signal.add_argument(
        "--signal-id", help="an id of your own: sending it again stores nothing new"
    )
    signal.set_defaults(run=_signal)


def _resolve_options(resolve: argparse.ArgumentParser) -> None:
    resolve.add_argument("saga_id")
    resolve.add_argument("decision", choices=["retry", "skip", "compensate"])
    resolve.add_argument(
        "--app",
        required=True,
        metavar="MODULE:APP",
        help="a SpakkyApplication, a SagaEngine with a store, or a function returning one",
    )
    resolve.set_defaults(run=_resolve)


def _wait_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`resolve` and `signal`: what operators send to sagas that wait (docs/waits.md)."""
    _resolve_options(
        command(
            "resolve",
            "answer a saga whose step escalated (Escalate()): retry the step, skip it, or "
            "compensate; recorded with who decided",
        )
    )
    _signal_options(
        command(
            "signal",
            "send a signal to a RUNNING or WAITING saga, for its wait_for(TYPE, ...): stored "
            "before the command returns, taken once",
        )
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="spakky-saga",
        description=(
            "Operations on durable sagas: list and show what a saga store holds, recover the "
            "sagas a stopped engine left unfinished, retry failed compensations, cancel a running "
            "saga, purge finished sagas, draw a flow."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def store_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--store", required=True, help="sqlite:////abs/file.db, a path, or postgresql://..."
        )
        command.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
        command.add_argument("--json", action="store_true", help="machine-readable output")

    def app_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--app",
            required=True,
            metavar="MODULE:APP",
            help="a SpakkyApplication, a SagaEngine with a store, or a function returning one",
        )
        command.add_argument("--json", action="store_true", help="machine-readable output")

    listing = command("list", "list sagas, most recently updated first (reads only)")
    store_options(listing)
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=[s.value for s in StoredStatus],
        help="only these statuses (repeatable)",
    )
    listing.add_argument(
        "--name", action="append", default=[], help="only sagas of this name (repeatable)"
    )
    listing.add_argument(
        "--since", metavar="TIME", help="only sagas updated at or after TIME (ISO; naive is UTC)"
    )
    listing.add_argument(
        "--until", metavar="TIME", help="only sagas updated before TIME (ISO; naive is UTC)"
    )
    listing.add_argument("--limit", type=_positive, default=100, help="at most N sagas (100)")
    listing.set_defaults(run=_list)

    show = command("show", "one saga, its error and its timeline (reads only)")
    show.add_argument("saga_id")
    store_options(show)
    show.set_defaults(run=_show)

    recover = command(
        "recover",
        "finish the sagas whose engine stopped: compensate (or resume) them by their policy",
    )
    app_options(recover)
    recover.add_argument(
        "--wait",
        type=_seconds,
        nargs="?",
        const=DEFAULT_WAIT,
        metavar="SECONDS",
        help="wait for sagas another engine's lease still holds, until the leases expire "
        f"(at most SECONDS, {DEFAULT_WAIT:g} by default), and recover them",
    )
    recover.add_argument("--limit", type=_positive, default=100, help="at most N sagas (100)")
    recover.add_argument(
        "--compensate-by-name",
        action="store_true",
        help="compensate sagas whose flow changed, matching steps by name",
    )
    recover.set_defaults(run=_recover)

    retry = command(
        "retry-compensation",
        "re-run the failed compensations of a COMPENSATION_FAILED saga, once repaired",
    )
    retry.add_argument("saga_id")
    app_options(retry)
    retry.set_defaults(run=_retry)

    cancel = command(
        "cancel",
        "stop a RUNNING saga and compensate its committed steps: now if its engine is dead, "
        "else its engine does within a lease",
    )
    cancel.add_argument("saga_id")
    app_options(cancel)
    cancel.set_defaults(run=_cancel)

    _wait_commands(command)

    purge = command(
        "purge",
        "delete the sagas (row and log) that finished (COMPLETED, FAILED, TIMED_OUT, "
        "CANCELLED) before a time; never unfinished, COMPENSATION_FAILED or STUCK ones",
    )
    store_options(purge)
    purge.add_argument(
        "--finished-before",
        required=True,
        metavar="TIME",
        help="only sagas last updated before TIME (ISO date or time; naive is UTC)",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="say how many (--json: which) would go; delete none"
    )
    purge.set_defaults(run=_purge)

    console = command(
        "console",
        "serve the operations console (a web page; the console extra) on 127.0.0.1:8000",
    )
    _console_options(console)
    console.set_defaults(run=_console)

    graph = command("graph", "print a flow as a Mermaid flowchart")
    graph.add_argument(
        "target",
        metavar="MODULE:TARGET",
        help="a SagaFlow, a saga class (no constructor arguments), or a function returning a flow",
    )
    graph.add_argument("--markdown", action="store_true", help="wrap it in a ```mermaid fence")
    graph.add_argument("--direction", choices=DIRECTIONS, default="TD", help="TD or LR (TD)")
    graph.set_defaults(run=_graph)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.run(args))
    except UsageError as error:
        print(f"spakky-saga: {error}", file=sys.stderr)
        return USAGE
    except _NotFound as error:
        print(f"spakky-saga: {error}", file=sys.stderr)
        return NOT_FOUND
    except _BrokenTarget as error:
        print(f"spakky-saga: {error}", file=sys.stderr)
        return ATTENTION
    except _NoStore as error:
        print(f"spakky-saga: {error}", file=sys.stderr)
        return STORE_FAILED
    except SagaStoreError as error:
        print(f"spakky-saga: {error_text(error)}", file=sys.stderr)
        return STORE_FAILED
    return code
