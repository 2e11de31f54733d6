"""`spakky-saga` (and `python -m spakky_saga`): operations on durable sagas.

    spakky-saga list --store URL [--status STATUS ...] [--limit N] [--json]
    spakky-saga show SAGA_ID --store URL [--json]
    spakky-saga recover --app MODULE:ENGINE [--limit N] [--compensate-by-name] [--json]
    spakky-saga retry-compensation SAGA_ID --app MODULE:ENGINE [--json]
    spakky-saga graph MODULE:TARGET [--markdown] [--direction TD|LR]

`--store` is `sqlite:////absolute/sagas.db`, `sqlite:///relative.db` (or a plain file path)
or a PostgreSQL URL
(`postgresql://user@host/db`, with `--schema` for a schema other than public). `recover` and
`retry-compensation` run compensations and steps, so they need the application's flows:
`--app` names a `SagaEngine` (or a function returning one) whose flows are registered,
importable from the current directory. `graph` prints a flow's Mermaid flowchart: TARGET is a
SagaFlow, a saga class whose constructor takes no arguments, a saga instance, or a function
returning a flow or a saga; it exits 1 when the target's own code fails or builds an invalid
flow.

Exit codes, for scripts: 0 done; 1 something needs attention (a saga refused, a compensation
failed again); 2 wrong usage; 3 no such saga; 4 the store failed or was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from spakky_saga._text import error_text, safe_repr
from spakky_saga.diagram import DIRECTIONS, to_mermaid
from spakky_saga.engine import SagaEngine
from spakky_saga.errors import SagaStoreError
from spakky_saga.flow import SagaFlow
from spakky_saga.recovery import RecoveredSaga
from spakky_saga.saga import AbstractSaga
from spakky_saga.store import SagaRecord, SagaStore, StoredStatus
from spakky_saga.stores.postgres import PostgresSagaStore
from spakky_saga.stores.sqlite import SqliteSagaStore
from spakky_saga.timeline import format_timeline, rows_from_events

OK: Final = 0
ATTENTION: Final = 1
USAGE: Final = 2
NOT_FOUND: Final = 3
STORE_FAILED: Final = 4


class UsageError(Exception):
    """A command line that cannot work: said on stderr, exit code 2."""


def open_store(url: str, schema: str = "public") -> SagaStore:
    """The store a `--store` URL names."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSagaStore(url, schema=schema)
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        path = rest.removeprefix("///") if rest.startswith("///") else rest
        if not path or path.startswith("//"):
            raise UsageError(
                f"--store {url}: give a file, as SQLAlchemy URLs do: sqlite:///relative.db or "
                "sqlite:////absolute/path/sagas.db (or just the path)"
            )
        return SqliteSagaStore(path)
    if "://" in url:
        raise UsageError(
            f"--store {url}: use sqlite:////path/to/sagas.db or postgresql://user@host/db"
        )
    return SqliteSagaStore(url)


def load_engine(spec: str) -> SagaEngine:
    """The `SagaEngine` that `module:attribute` names (or a function returning one)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--app {spec}: write MODULE:ATTRIBUTE, e.g. myapp.sagas:engine")
    sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--app {spec}: cannot import it ({error_text(error)})") from error
    if callable(target) and not isinstance(target, SagaEngine):
        target = target()
    if not isinstance(target, SagaEngine) or target.store is None:
        raise UsageError(
            f"--app {spec}: expected a SagaEngine with a store (SagaEngine(store=...)) whose "
            f"flows are registered, got {target!r}"
        )
    return target


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


async def _list(args: argparse.Namespace) -> int:
    store = open_store(args.store, args.schema)
    try:
        await store.open()
        statuses = [StoredStatus(s) for s in args.status]
        records = await store.list(statuses, args.limit)
    finally:
        await store.close()
    if args.json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return OK
    if not records:
        print("no sagas")
        return OK
    table = [("saga id", "name", "status", "updated", "owner")]
    table += [
        (r.saga_id, r.saga_name, r.status.value, _when(r.updated), r.owner or "-") for r in records
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return OK


async def _show(args: argparse.Namespace) -> int:
    store = open_store(args.store, args.schema)
    try:
        await store.open()
        record = await store.load(args.saga_id)
    finally:
        await store.close()
    if record is None:
        print(f"no saga {args.saga_id} in the store", file=sys.stderr)
        return NOT_FOUND
    rows = rows_from_events(record.events)
    if args.json:
        print(
            json.dumps(
                _record_json(record)
                | {"data": json.loads(record.data), "timeline": [r._asdict() for r in rows]},
                indent=2,
            )
        )
        return OK
    print(f"saga {record.saga_id} ({record.saga_name}): {record.status.value}")
    print(f"  started {_when(record.created)}, updated {_when(record.updated)}")
    if record.owner:
        print(f"  owned by {record.owner} until {_when(record.lease_expires)}")
    if record.failed_step:
        print(f'  failed step "{record.failed_step}": {record.error}')
    elif record.error:
        print(f"  error: {record.error}")
    print(f"  data: {record.data}")
    print()
    print(format_timeline(rows))
    return OK


def _report(sagas: Sequence[RecoveredSaga], as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "saga_id": s.saga_id,
                        "saga_name": s.saga_name,
                        "outcome": s.outcome.value,
                        "status": None if s.result is None else s.result.status.value,
                        "error": None if s.error is None else error_text(s.error),
                    }
                    for s in sagas
                ],
                indent=2,
            )
        )
    elif not sagas:
        print("nothing to recover")
    for saga in [] if as_json else sagas:
        detail = "" if saga.error is None else f": {error_text(saga.error)}"
        print(f"{saga.saga_id} ({saga.saga_name}): {saga.outcome}{detail}")
    return ATTENTION if any(s.outcome.needs_attention for s in sagas) else OK


async def _recover(args: argparse.Namespace) -> int:
    engine = load_engine(args.app)
    try:
        report = await engine.recover(limit=args.limit, compensate_by_name=args.compensate_by_name)
    finally:
        await engine.aclose()
    return _report(report.sagas, args.json)


async def _retry(args: argparse.Namespace) -> int:
    engine = load_engine(args.app)
    try:
        outcome = await engine.retry_compensation(args.saga_id)
    finally:
        await engine.aclose()
    return _report([outcome], args.json)


class _BrokenTarget(Exception):
    """The code a `graph` target runs (its module, constructor, factory or flow()) failed, or
    built an invalid flow: said on stderr, exit code 1."""


def load_flow(spec: str) -> SagaFlow[Any]:
    """The flow `module:attribute` names: a SagaFlow, a saga class whose constructor takes no
    arguments, a saga instance (anything with a `flow()` method), or a function returning a
    flow or a saga."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(
            f"graph {spec}: write MODULE:ATTRIBUTE, e.g. myapp.sagas:order_flow or "
            "myapp.sagas:CreateOrderSaga"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"graph {spec}: cannot import it ({error_text(error)})") from error
    except Exception as error:  # the module's own code failed
        raise _BrokenTarget(
            f"graph {spec}: importing {module_name} raised {error_text(error)}"
        ) from error
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


async def _graph(args: argparse.Namespace) -> int:
    try:
        flow = load_flow(args.target)
    except _BrokenTarget as error:
        print(f"spakky-saga: {error}", file=sys.stderr)
        return ATTENTION
    text = to_mermaid(flow, direction=args.direction)
    print(f"```mermaid\n{text}\n```" if args.markdown else text)
    return OK


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="spakky-saga",
        description="Operations on durable sagas (see docs/durability.md).",
    )
    commands = main.add_subparsers(dest="command", required=True)

    def store_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--store", required=True, help="sqlite:////abs/file.db, a path, or postgresql://..."
        )
        command.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
        command.add_argument("--json", action="store_true", help="machine-readable output")

    listing = commands.add_parser("list", help="list sagas, newest first")
    store_options(listing)
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=[s.value for s in StoredStatus],
        help="only these statuses (repeatable)",
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(run=_list)

    show = commands.add_parser("show", help="one saga and its timeline")
    show.add_argument("saga_id")
    store_options(show)
    show.set_defaults(run=_show)

    recover = commands.add_parser("recover", help="finish sagas whose engine stopped")
    recover.add_argument("--app", required=True, help="MODULE:ENGINE, a SagaEngine with flows")
    recover.add_argument("--limit", type=int, default=100)
    recover.add_argument(
        "--compensate-by-name",
        action="store_true",
        help="compensate sagas whose flow changed, matching steps by name",
    )
    recover.add_argument("--json", action="store_true", help="machine-readable output")
    recover.set_defaults(run=_recover)

    retry = commands.add_parser("retry-compensation", help="re-run failed compensations")
    retry.add_argument("saga_id")
    retry.add_argument("--app", required=True, help="MODULE:ENGINE, a SagaEngine with flows")
    retry.add_argument("--json", action="store_true", help="machine-readable output")
    retry.set_defaults(run=_retry)

    graph = commands.add_parser("graph", help="print a flow as a Mermaid flowchart")
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
    except SagaStoreError as error:
        print(f"spakky-saga: {error_text(error)}", file=sys.stderr)
        return STORE_FAILED
    return code
