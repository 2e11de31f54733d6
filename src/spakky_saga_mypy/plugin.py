"""The plugin class: a thin dispatcher from full names to the hook modules.

`get_*` methods are pure and cheap: they answer None at once for names that are not ours
(mypy asks every plugin about every call), and dispatch on class ancestry so that user
subclasses of the flow types and strategies are covered too.
"""

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, cast, final

from mypy.checker import TypeChecker
from mypy.nodes import TypeInfo
from mypy.options import Options
from mypy.plugin import (
    ClassDefContext,
    FunctionContext,
    FunctionSigContext,
    MethodContext,
    MethodSigContext,
    Plugin,
    ReportConfigContext,
)
from mypy.types import (
    AnyType,
    FunctionLike,
    Instance,
    Type,
    TypeOfAny,
    UninhabitedType,
    get_proper_type,
)

from spakky_saga_mypy import _fullnames as names
from spakky_saga_mypy import (
    builders,
    decorator,
    operators,
    saga_class,
    strategies,
    timeouts,
    waits,
)

_DEBUG_ENV: Final = "SPAKKY_SAGA_MYPY_DEBUG"
"""Set to 1 to let a hook's exception propagate instead of falling back to mypy's default."""

type _Context = (
    FunctionContext | MethodContext | FunctionSigContext | MethodSigContext | ClassDefContext
)


def _guarded[C: _Context, R: (Type, FunctionLike, bool, None)](
    hook: Callable[[C], R],
) -> Callable[[C], R]:
    """Run `hook`; if it raises, note the bug and return what mypy would have used."""

    @functools.wraps(hook)
    def run(ctx: C) -> R:
        try:
            return hook(ctx)
        except Exception as error:
            if os.environ.get(_DEBUG_ENV):
                raise
            if isinstance(ctx, ClassDefContext):
                return True  # type: ignore[return-value] # class hooks: R is bool or None (ignored)
            if isinstance(ctx.api, TypeChecker):
                ctx.api.note(
                    f"spakky-saga mypy plugin: internal error in {hook.__name__} "
                    f"({type(error).__name__}: {error}); falling back to mypy's default type. "
                    "Please report this.",
                    ctx.context,
                )
            default: Any = (
                ctx.default_signature
                if isinstance(ctx, FunctionSigContext | MethodSigContext)
                else _without_never(ctx.default_return_type)
            )
            return default  # type: ignore[no-any-return] # the context's default has type R

    return run


def _without_never(default: Type) -> Type:
    """mypy's default result, with Any where our widened signature left nothing to infer
    (a `SagaStep[Never]` would cascade into errors that are not the user's)."""
    proper = get_proper_type(default)
    if not isinstance(proper, Instance):
        return default
    return proper.copy_modified(
        args=[
            AnyType(TypeOfAny.special_form)
            if isinstance(get_proper_type(arg), UninhabitedType)
            else arg
            for arg in proper.args
        ]
    )


def _source_digest() -> str:
    """A hash of the plugin's sources: editing any hook module invalidates mypy caches."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@final
class SpakkySagaPlugin(Plugin):
    """Types spakky_saga flows precisely and reports saga mistakes with their own codes."""

    _FUNCTION_SIGNATURE_HOOKS: ClassVar[
        Mapping[str, Callable[[FunctionSigContext], FunctionLike]]
    ] = {
        names.STEP_BUILDER: builders.signature_callback(builders.STEP),
        names.PARALLEL_BUILDER: builders.signature_callback(builders.PARALLEL),
        names.SAGA_FLOW_BUILDER: builders.signature_callback(builders.SAGA_FLOW),
        names.SAGA_FLOW: builders.signature_callback(builders.SAGA_FLOW_CLASS),
        names.PARALLEL: builders.signature_callback(builders.PARALLEL_CLASS),
        names.RETRY: strategies.retry_signature_callback,
        names.WAIT_FOR: waits.wait_for_signature_callback,
    }
    _FUNCTION_HOOKS: ClassVar[Mapping[str, Callable[[FunctionContext], Type]]] = {
        names.STEP_BUILDER: builders.step_callback,
        names.PARALLEL_BUILDER: builders.parallel_callback(builders.PARALLEL),
        names.SAGA_FLOW_BUILDER: builders.flow_callback(builders.SAGA_FLOW),
        names.SAGA_FLOW: builders.flow_callback(builders.SAGA_FLOW_CLASS),
        names.PARALLEL: builders.parallel_callback(builders.PARALLEL_CLASS),
        names.SAGA_STEP_DECORATOR: decorator.saga_step_callback,
        names.RETRY: strategies.retry_callback,
        names.EXPONENTIAL_BACKOFF: strategies.backoff_callback,
        names.WAIT_FOR: waits.wait_for_callback,
    }
    _CONSTRUCTOR_BASES: ClassVar[tuple[str, ...]] = (
        names.SAGA_FLOW,
        names.PARALLEL,
        names.RETRY,
        names.EXPONENTIAL_BACKOFF,
    )
    _METHOD_HOOKS: ClassVar[Mapping[tuple[str, str], Callable[[MethodContext], Type]]] = {
        (names.TRANSACTION, names.RSHIFT): operators.second_compensation_callback,
        (names.SAGA_STEP, names.RSHIFT): operators.bind_compensation_callback,
        (names.ACTION, names.AND): operators.parallel_callback,
        (names.PARALLEL, names.AND): operators.parallel_callback,
        (names.ACTION, names.OR): operators.strategy_callback,
        (names.PARALLEL, names.OR): operators.group_strategy_callback,
        (names.ERROR_STRATEGY, names.ROR): operators.reflected_strategy_class_callback,
    }
    _NAMED_METHOD_HOOKS: ClassVar[Mapping[str, Callable[[MethodContext], Type]]] = {
        f"{names.SAGA_FLOW}.{names.TIMEOUT_METHOD}": timeouts.flow_timeout_callback,
    }
    """Plain methods, by the full name of the class that defines them."""
    _UNWIDENED_METHODS: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {(names.ERROR_STRATEGY, names.ROR)}
    )
    """Operator methods whose right operand keeps its declared type."""

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._digest = _source_digest()
        self._guards: dict[object, object] = {}

    def report_config_data(self, ctx: ReportConfigContext) -> object:
        """Part of every module's cache key: a new plugin version re-checks everything."""
        from spakky_saga_mypy import __version__  # noqa: PLC0415 - the package imports us

        return {"spakky_saga_mypy": __version__, "sources": self._digest}

    def get_function_signature_hook(
        self, fullname: str
    ) -> Callable[[FunctionSigContext], FunctionLike] | None:
        base = self._our_name(fullname, self._FUNCTION_SIGNATURE_HOOKS)
        return self._guard(self._FUNCTION_SIGNATURE_HOOKS[base]) if base else None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        base = self._our_name(fullname, self._FUNCTION_HOOKS)
        return self._guard(self._FUNCTION_HOOKS[base]) if base else None

    def get_base_class_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        if fullname == names.ABSTRACT_SAGA:
            return self._guard(saga_class.flow_annotation_callback)
        info = self._class_info(fullname)
        if info is not None and info.has_base(names.ABSTRACT_SAGA):
            return self._guard(saga_class.flow_annotation_callback)
        return None

    def get_method_signature_hook(
        self, fullname: str
    ) -> Callable[[MethodSigContext], FunctionLike] | None:
        key = self._method_key(fullname)
        if key is None or key in self._UNWIDENED_METHODS:
            return None
        if key == (names.TRANSACTION, names.RSHIFT):
            return self._guard(operators.any_operand_signature_callback)
        return self._guard(operators.operand_signature_callback)

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        named = self._NAMED_METHOD_HOOKS.get(fullname)
        if named is not None:
            return self._guard(named)
        key = self._method_key(fullname)
        return self._guard(self._METHOD_HOOKS[key]) if key else None

    def _guard[C: _Context, R: (Type, FunctionLike, bool, None)](
        self, hook: Callable[[C], R]
    ) -> Callable[[C], R]:
        """`hook` wrapped by `_guarded`, built once per hook (mypy asks for hooks per call)."""
        guarded = self._guards.get(hook)
        if guarded is None:
            guarded = self._guards[hook] = _guarded(hook)
        return cast(Callable[[C], R], guarded)

    def _our_name(self, fullname: str, table: Mapping[str, object]) -> str | None:
        """`fullname` if the table has it, else the library class it derives from."""
        if fullname in table:
            return fullname
        info = self._class_info(fullname)
        if info is None:
            return None
        for base in self._CONSTRUCTOR_BASES:
            if base in table and info.has_base(base):
                return base
        return None

    def _method_key(self, fullname: str) -> tuple[str, str] | None:
        """(library class, dunder) of an operator method, for the class or a subclass."""
        if not fullname.endswith(names.OPERATOR_METHODS):  # the fast "not ours"
            return None
        owner, _, method = fullname.rpartition(".")
        info = self._class_info(owner)
        if info is None:
            return None
        for base, name in self._METHOD_HOOKS:
            if name == method and info.has_base(base):
                return base, name
        return None

    def _class_info(self, fullname: str) -> TypeInfo | None:
        if self._modules is None or fullname.startswith("builtins."):
            return None
        symbol = self.lookup_fully_qualified(fullname)
        return symbol.node if symbol is not None and isinstance(symbol.node, TypeInfo) else None
