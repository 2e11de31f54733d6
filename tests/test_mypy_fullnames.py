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
        (names.ABSTRACT_SAGA, names.FLOW_METHOD_NAME),
    ],
)
def test_hooked_methods_are_defined_where_the_plugin_expects(owner: str, method: str) -> None:
    cls = _resolve(owner)

    assert inspect.isclass(cls)
    assert method in vars(cls), f"{owner}.{method} moved: the plugin's hook would not fire"
