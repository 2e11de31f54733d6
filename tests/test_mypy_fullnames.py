"""The plugin refers to the library by full name: each one must still resolve, so that a
rename in spakky_saga cannot silently switch a hook off."""

from __future__ import annotations

import importlib
import inspect

import pytest

from spakky_saga_mypy import _fullnames as names

_DOTTED = sorted(
    (constant, value)
    for constant, value in vars(names).items()
    if constant.isupper() and isinstance(value, str) and value.startswith("spakky_saga.")
)


def _resolve(fullname: str) -> object:
    module_name, _, attribute = fullname.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


@pytest.mark.parametrize(("constant", "fullname"), _DOTTED)
def test_every_full_name_resolves_in_the_runtime_library(constant: str, fullname: str) -> None:
    obj = _resolve(fullname)

    assert getattr(obj, "__module__", None) == fullname.rpartition(".")[0], constant
    assert getattr(obj, "__qualname__", None) == fullname.rpartition(".")[2], constant


def test_every_library_full_name_is_checked() -> None:
    assert len(_DOTTED) >= 15


@pytest.mark.parametrize(
    ("owner", "method"),
    [
        (names.SAGA_STEP, names.RSHIFT),
        (names.TRANSACTION, names.RSHIFT),
        (names.ACTION, names.AND),
        (names.ACTION, names.OR),
        (names.PARALLEL, names.AND),
        (names.PARALLEL, names.OR),
        (names.ABSTRACT_SAGA, names.FLOW_METHOD_NAME),
        (names.SAGA_FLOW, names.TIMEOUT_METHOD),
        (names.ERROR_STRATEGY, names.DECIDE),
        (names.ERROR_STRATEGY, names.SKIPS),
        (names.SKIP, names.SKIPS),
        (names.RETRY, names.SKIPS),
    ],
)
def test_hooked_methods_are_defined_where_the_plugin_expects(owner: str, method: str) -> None:
    cls = _resolve(owner)

    assert inspect.isclass(cls)
    assert method in vars(cls), f"{owner}.{method} moved: the plugin's hook would not fire"


@pytest.mark.parametrize(
    ("owner", "parameter"),
    [
        (names.STEP_BUILDER, "compensate"),
        (names.STEP_BUILDER, "on_error"),
        (names.STEP_BUILDER, "timeout"),
        (names.PARALLEL_BUILDER, "merge"),
        (names.PARALLEL_BUILDER, "compensate"),
        (names.RETRY, "max_attempts"),
        (names.RETRY, names.THEN),
        (names.RETRY, "retry_on"),
        (names.EXPONENTIAL_BACKOFF, "base"),
        (names.EXPONENTIAL_BACKOFF, "max_delay"),
        (names.EXPONENTIAL_BACKOFF, "jitter"),
        (names.SAGA_FLOW, "saga_timeout"),
        (names.SAGA_FLOW, "items"),
        (names.PARALLEL, "items"),
        (names.PARALLEL, "merge"),
    ],
)
def test_parameters_the_hooks_read_are_still_there(owner: str, parameter: str) -> None:
    target = _resolve(owner)

    assert callable(target)
    assert parameter in inspect.signature(target).parameters, (
        f"{owner}({parameter}=...) is gone: the plugin's check of it would never fire"
    )


def test_retry_takes_then_at_the_position_the_plugin_reads() -> None:
    retry = _resolve(names.RETRY)
    assert callable(retry)
    parameters = list(inspect.signature(retry).parameters)

    assert parameters.index(names.THEN) == names.THEN_POSITION, (
        "Retry's positional parameters moved: the plugin would read another one as then="
    )
