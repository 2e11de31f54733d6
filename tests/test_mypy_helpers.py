"""The plugin's pure helpers: literal values, operand labels, parameter lookup, versions."""

from __future__ import annotations

import pytest
from mypy.nodes import FloatExpr, IntExpr, MemberExpr, NameExpr, OpExpr, StrExpr, UnaryExpr
from mypy.types import AnyType, TypeOfAny

from spakky_saga_mypy import _release
from spakky_saga_mypy._items import label_of, literal_number
from spakky_saga_mypy.builders import formal_index

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
