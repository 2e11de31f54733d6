"""The plugin's pure helpers: literal values, operand labels, parameter lookup, versions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from mypy.nodes import (
    ARG_NAMED,
    ARG_POS,
    ARG_STAR,
    CallExpr,
    Expression,
    FloatExpr,
    IntExpr,
    MemberExpr,
    NameExpr,
    OpExpr,
    StrExpr,
    UnaryExpr,
)
from mypy.types import AnyType, TypeOfAny

from spakky_saga_mypy import _release
from spakky_saga_mypy._items import label_of, literal_number
from spakky_saga_mypy.builders import formal_index
from spakky_saga_mypy.timeouts import literal_timedelta

_ANY = AnyType(TypeOfAny.special_form)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        (IntExpr(3), 3),
        (FloatExpr(0.5), 0.5),
        (UnaryExpr("-", IntExpr(2)), -2),
        (UnaryExpr("-", UnaryExpr("-", FloatExpr(1.5))), 1.5),
        (UnaryExpr("+", IntExpr(4)), 4),
        (UnaryExpr("not", IntExpr(4)), None),
        (NameExpr("attempts"), None),
    ],
)
def test_literal_number_reads_literals_and_signed_literals(
    expr: IntExpr | FloatExpr | UnaryExpr | NameExpr, value: float | None
) -> None:
    assert literal_number(expr, _ANY) == value


def _timedelta_call(*args: tuple[str | None, Expression], callee: str = "timedelta") -> CallExpr:
    name = NameExpr(callee)
    name.fullname = f"datetime.{callee}"
    kinds = [ARG_POS if key is None else ARG_NAMED for key, _ in args]
    return CallExpr(name, [value for _, value in args], kinds, [key for key, _ in args])


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (_timedelta_call(), timedelta(0)),
        (_timedelta_call((None, IntExpr(0))), timedelta(0)),
        (_timedelta_call(("seconds", UnaryExpr("-", IntExpr(1)))), timedelta(seconds=-1)),
        (_timedelta_call((None, IntExpr(1)), (None, IntExpr(-86400))), timedelta(0)),
        (_timedelta_call(("milliseconds", FloatExpr(0.5))), timedelta(milliseconds=0.5)),
        (_timedelta_call(("seconds", NameExpr("seconds"))), None),
        (_timedelta_call(("seconds", OpExpr("-", IntExpr(1), IntExpr(1)))), None),
        (_timedelta_call(("fortnights", IntExpr(1))), None),
        (_timedelta_call(("seconds", IntExpr(1)), callee="datetime"), None),
        (_timedelta_call(("days", FloatExpr(1e300))), None),
    ],
)
def test_literal_timedelta_reads_only_calls_whose_arguments_are_number_literals(
    call: CallExpr, value: timedelta | None
) -> None:
    assert literal_timedelta(call) == value


def test_literal_timedelta_leaves_star_arguments_alone() -> None:
    call = _timedelta_call((None, IntExpr(0)))
    call.arg_kinds = [ARG_STAR]

    assert literal_timedelta(call) is None


def test_operand_labels_name_steps_and_show_compositions() -> None:
    reserve = MemberExpr(NameExpr("self"), "reserve")
    release = NameExpr("release")

    assert label_of(reserve) == "reserve"
    assert label_of(OpExpr(">>", reserve, release)) == "reserve >> release"
    assert label_of(StrExpr("notify")) == "'notify'"


def test_formal_index_finds_positional_only_parameters_by_position() -> None:
    names: list[str | None] = [None, None, "rest", "merge"]

    assert formal_index(names, 1) == 1
    assert formal_index(names, "merge") == 3
    assert formal_index(names, 7) is None
    assert formal_index(names, "compensate") is None


@pytest.mark.parametrize(
    ("version", "release"),
    [("2.4.1", (2, 4)), ("2.4.0+dev.1a2b", (2, 4)), ("2.5", (2, 5)), ("3.0.0rc1", (3, 0))],
)
def test_release_reads_major_and_minor(version: str, release: tuple[int, int]) -> None:
    assert _release(version) == release
