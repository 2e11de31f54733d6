"""Flows drawn as Mermaid flowcharts (`SagaFlow.to_mermaid()`, `spakky-saga graph`).

The diagrams are parsed back line by line: every line must be a node, an edge or a class
line this parser knows, so a line Mermaid would not read fails the test too.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaFlow,
    Skip,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.cli import main
from spakky_saga.diagram import to_mermaid
from tests.support import OrderData, charge, notify, refund, release, reserve

ROOT = Path(__file__).parent.parent

SHAPES = {
    ("([", "])"): "terminal",
    ("[", "]"): "step",
    ("(", ")"): "compensation",
    ("[/", "\\]"): "fork",
    ("[\\", "/]"): "join",
}
NODE = re.compile(
    r'(?P<id>\w+)(?P<open>\(\[|\[/|\[\\|\[|\()"(?P<label>[^"]*)"(?P<close>\]\)|\\\]|/\]|\]|\))'
)
EDGE = re.compile(r"(?P<source>\w+) (?P<arrow>-->|-\.->\|compensate\|) (?P<target>\w+)")
CLASS = re.compile(r"class (?P<ids>\w+(?:,\w+)*) compensation")
PIVOT_CLASS = re.compile(r"class (?P<id>\w+) pivot")
VALID_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass
class Node:
    shape: str
    lines: list[str]

    @property
    def name(self) -> str:
        return self.lines[0]


@dataclass
class Chart:
    direction: str
    nodes: dict[str, Node] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    compensations: list[tuple[str, str]] = field(default_factory=list)
    styled: list[str] = field(default_factory=list)
    pivot: str | None = None
    """The node drawn as the pivot (its `class ... pivot`)."""

    def after(self, node_id: str) -> list[str]:
        return [target for source, target in self.edges if source == node_id]

    def before(self, node_id: str) -> list[str]:
        return [source for source, target in self.edges if target == node_id]

    def names(self, ids: list[str]) -> list[str]:
        return [self.nodes[node_id].name for node_id in ids]

    def path(self) -> list[str | tuple[str, ...]]:
        """The names along the forward edges from start to finish, a group as a tuple; every
        member of a group must lead to the same join."""
        walked: list[str | tuple[str, ...]] = []
        (node_id,) = self.after("start")
        while node_id != "finish":
            if self.nodes[node_id].shape == "fork":
                members = self.after(node_id)
                walked.append(tuple(self.names(members)))
                (join,) = {target for member in members for target in self.after(member)}
                assert self.nodes[join].shape == "join"
                (node_id,) = self.after(join)
            else:
                walked.append(self.nodes[node_id].name)
                (node_id,) = self.after(node_id)
        return walked

    def undo_of(self, name: str) -> list[str]:
        """The names of the compensations of every step called `name`."""
        return [
            self.nodes[undo].name
            for step_id, undo in self.compensations
            if self.nodes[step_id].name == name
        ]


def unescape(label: str) -> list[str]:
    def decode(match: re.Match[str]) -> str:
        return chr(int(match[1]))

    return [re.sub(r"#(\d+);", decode, line) for line in label.split("<br/>")]


def parse(text: str) -> Chart:
    header, *body = text.split("\n")
    chart = Chart(direction=header.removeprefix("flowchart "))
    assert header in ("flowchart TD", "flowchart LR")
    for line in body:
        assert re.match(r"    \S", line), f"not indented by four spaces: {line!r}"
        line = line[4:]  # noqa: PLW2901 - the same line, without its indentation
        if node := NODE.fullmatch(line):
            assert node["id"] not in chart.nodes, f"duplicate id {node['id']}"
            shape = SHAPES[(node["open"], node["close"])]
            chart.nodes[node["id"]] = Node(shape, unescape(node["label"]))
            chart.order.append(node["id"])
        elif edge := EDGE.fullmatch(line):
            pair = (edge["source"], edge["target"])
            assert set(pair) <= set(chart.nodes), f"edge before its nodes: {line}"
            (chart.edges if edge["arrow"] == "-->" else chart.compensations).append(pair)
        elif styled := CLASS.fullmatch(line):
            chart.styled.extend(styled["ids"].split(","))
        elif pivot := PIVOT_CLASS.fullmatch(line):
            assert chart.pivot is None, "one pivot"
            chart.pivot = pivot["id"]
        else:
            assert line in (
                "classDef compensation stroke-dasharray: 5 5",
                "classDef pivot stroke-width:4px",
            ), line
    for node_id in chart.nodes:
        assert VALID_ID.fullmatch(node_id), node_id
        assert node_id.lower() != "end", "a node called end ends a subgraph"
        assert node_id[0] not in "ox", f"{node_id}: Mermaid may read o/x as an edge ending"
    return chart


def draw(flow: SagaFlow[Any]) -> Chart:
    text = flow.to_mermaid()
    assert text == to_mermaid(flow) == flow.to_mermaid(), "the same flow gives the same text"
    return parse(text)


def alert(data: OrderData) -> None:
    pass


def combine(data: OrderData, results: tuple[OrderData | None, ...]) -> OrderData:
    return data


def test_a_small_flow_is_drawn_as_this_text() -> None:
    flow = saga_flow(step(reserve) >> release, step(charge) | Retry(3))

    assert flow.to_mermaid() == textwrap.dedent(
        """\
        flowchart TD
            start(["start"])
            s1["reserve"]
            c1("release")
            s2["charge<br/>Retry(3)"]
            finish(["completed"])
            start --> s1
            s1 --> s2
            s2 --> finish
            s1 -.->|compensate| c1
            classDef compensation stroke-dasharray: 5 5
            class c1 compensation"""
    )


def test_sequential_steps_are_chained_in_order_from_start_to_finish() -> None:
    chart = draw(saga_flow(step(reserve) >> release, charge, step(notify) >> refund))

    assert chart.path() == ["reserve", "charge", "notify"]
    assert chart.nodes["start"] == Node("terminal", ["start"])
    assert chart.nodes["finish"] == Node("terminal", ["completed"])
    assert [chart.nodes[i].shape for i in chart.order] == [
        "terminal", "step", "compensation", "step", "step", "compensation", "terminal"
    ]  # fmt: skip


def test_each_transaction_has_a_dotted_edge_to_its_compensation() -> None:
    chart = draw(saga_flow(step(reserve) >> release, charge, step(notify) >> refund))

    assert [(chart.nodes[s].name, chart.nodes[c].name) for s, c in chart.compensations] == [
        ("reserve", "release"),
        ("notify", "refund"),
    ]
    assert chart.styled == [undo for _, undo in chart.compensations]
    assert all(chart.nodes[undo].shape == "compensation" for undo in chart.styled)
    assert all(not chart.after(undo) and not chart.before(undo) for undo in chart.styled)


def test_a_flow_without_compensations_has_no_compensation_lines() -> None:
    text = saga_flow(reserve, charge).to_mermaid()

    assert "compensat" not in text
    assert parse(text).path() == ["reserve", "charge"]


def test_a_parallel_group_forks_to_its_members_and_joins_after_them() -> None:
    flow = saga_flow(reserve, (step(charge) >> refund) & step(notify), step(reserve) >> release)
    chart = draw(flow)

    assert chart.path() == ["reserve", ("charge", "notify"), "reserve"]
    (fork,) = [i for i in chart.order if chart.nodes[i].shape == "fork"]
    (join,) = [i for i in chart.order if chart.nodes[i].shape == "join"]
    assert chart.names(chart.before(fork)) == ["reserve"]
    assert chart.names(chart.after(fork)) == ["charge", "notify"]
    assert chart.names(chart.before(join)) == ["charge", "notify"]
    assert chart.names(chart.after(join)) == ["reserve"]
    assert (chart.nodes[fork].lines, chart.nodes[join].lines) == (["parallel"], ["join"])
    assert chart.undo_of("charge") == ["refund"]
    assert chart.undo_of("notify") == []


def test_consecutive_groups_each_get_their_own_fork_and_join() -> None:
    chart = draw(saga_flow(step(reserve) & step(charge), step(notify) & step(refund)))

    assert chart.path() == [("reserve", "charge"), ("notify", "refund")]
    assert len([n for n in chart.nodes.values() if n.shape in ("fork", "join")]) == 4


def test_a_group_shows_its_merge_function_and_concurrent_compensation() -> None:
    flow = saga_flow(parallel(reserve, charge, merge=combine, compensate="concurrent"))
    chart = draw(flow)

    shapes = {node.shape: node.lines for node in chart.nodes.values()}
    assert shapes["fork"] == ["parallel", "compensated concurrently"]
    assert shapes["join"] == ["merge", "combine"]


def test_repeated_names_get_distinct_nodes() -> None:
    flow = saga_flow(
        step(reserve) >> release,
        step(reserve) >> release,
        step(reserve, name="reserve") & (step(reserve) >> release),
        step(reserve),
    )
    chart = draw(flow)

    assert chart.path() == ["reserve", "reserve", ("reserve", "reserve"), "reserve"]
    assert len([n for n in chart.nodes.values() if n.lines == ["reserve"]]) == 5
    assert chart.undo_of("reserve") == ["release"] * 3
    assert len(set(chart.compensations)) == 3


SPECIAL_NAMES = [
    'charge "card"',
    "a & b",
    "<b>bold</b>",
    "#quot; stays text",
    "#35;",
    "50%%{init: {'theme': 'dark'}}%%",
    "style: x #fff;",
    "semi; colon: pipe | brackets [] {} ()",
    "`markdown` **not**",
    "end",
    "o",
    "x-ray",
    "ünïcödé → 名前",
    "back\\slash",
]


@pytest.mark.parametrize("name", SPECIAL_NAMES)
def test_a_name_with_special_characters_is_shown_exactly_and_breaks_nothing(name: str) -> None:
    flow = saga_flow(
        step(reserve, name=name) >> step(release, name=name),
        step(charge, name=name) & step(notify, name=name),
    )
    chart = draw(flow)

    assert chart.path() == [name, (name, name)]
    assert chart.undo_of(name) == [name]
    raw = flow.to_mermaid()
    labels = [match["label"] for match in map(NODE.fullmatch, raw.split("\n")[1:]) if match]
    for label in (label.replace("<br/>", "") for label in labels):
        assert not set(label) & set('"&<>:;%`\n'), label
        assert not re.search(r"#(?!\d+;)", label), label


def test_a_newline_in_a_name_becomes_a_line_break() -> None:
    chart = draw(saga_flow(step(reserve, name="reserve\nstock")))

    assert chart.nodes["s1"].lines == ["reserve", "stock"]


def test_a_step_shows_its_strategy_and_timeout() -> None:
    flow = saga_flow(
        step(reserve, timeout=timedelta(seconds=2)) | Retry(3, ExponentialBackoff(0.5, 5.0)),
        step(charge) | Skip(),
        (step(notify, timeout=timedelta(milliseconds=250)) >> refund) | Retry(2, then=Skip()),
        step(refund) | Retry(),
    )
    chart = draw(flow)

    assert [chart.nodes[f"s{n}"].lines for n in range(1, 5)] == [
        ["reserve", "Retry(3, ExponentialBackoff(0.5, max_delay=5.0))", "timeout 2s"],
        ["charge", "Skip()"],
        ["notify", "Retry(2, then=Skip())", "timeout 250ms"],
        ["refund", "Retry(3)"],
    ]


def test_the_default_strategy_is_not_shown() -> None:
    chart = draw(saga_flow(step(reserve) >> release))

    assert chart.nodes["s1"].lines == ["reserve"]


def test_group_members_show_their_strategies_and_timeouts() -> None:
    flow = saga_flow((step(reserve) | Retry(2)) & step(charge, timeout=timedelta(minutes=1)))
    chart = draw(flow)

    members = chart.after(next(i for i in chart.order if chart.nodes[i].shape == "fork"))
    assert [chart.nodes[m].lines for m in members] == [
        ["reserve", "Retry(2)"],
        ["charge", "timeout 1min"],
    ]


def test_the_start_node_shows_the_saga_timeout_and_compensation_failure_handler() -> None:
    flow = saga_flow(step(reserve) >> release).timeout(timedelta(seconds=30))

    assert draw(flow).nodes["start"].lines == ["start", "saga timeout 30s"]
    assert draw(flow.on_compensation_failure(alert)).nodes["start"].lines == [
        "start",
        "saga timeout 30s",
        "on compensation failure → alert",
    ]


def test_a_flow_can_be_drawn_left_to_right() -> None:
    flow = saga_flow(reserve, charge)

    assert flow.to_mermaid(direction="LR").split("\n")[0] == "flowchart LR"
    assert parse(flow.to_mermaid(direction="LR")).path() == ["reserve", "charge"]


def test_drawing_something_else_than_a_flow_or_in_an_unknown_direction_is_refused() -> None:
    with pytest.raises(TypeError, match="to_mermaid\\(\\) draws a SagaFlow, got 5"):
        to_mermaid(5)  # type: ignore[arg-type] # what a caller without a type checker may do
    with pytest.raises(ValueError, match="direction must be 'TD' or 'LR'"):
        saga_flow(reserve).to_mermaid(direction="BT")  # type: ignore[arg-type] # as above


@pytest.fixture
def demo_flow(monkeypatch: pytest.MonkeyPatch) -> SagaFlow[Any]:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    from order_saga import (  # noqa: PLC0415 - examples/ is on the path only now
        CreateOrderSaga,
        Inventory,
        Kitchen,
        Payments,
    )

    return CreateOrderSaga(Kitchen(), Inventory(stock=10), Payments()).flow()


def test_the_demo_order_saga_is_drawn_with_its_group_retry_and_timeout(
    demo_flow: SagaFlow[Any],
) -> None:
    chart = draw(demo_flow)

    assert chart.path() == [
        ("issue_ticket", "charge_payment"),
        "reserve_stock",
        "confirm_order",
        "book_delivery",
    ]
    assert chart.undo_of("issue_ticket") == ["cancel_ticket"]
    assert chart.undo_of("charge_payment") == ["refund_payment"]
    assert chart.undo_of("reserve_stock") == ["release_stock"]
    assert chart.undo_of("book_delivery") == []
    assert chart.nodes["s2"].lines == [
        "reserve_stock",
        "Retry(3, ExponentialBackoff(0.01), retry_on=(ConnectionError,))",
    ]
    assert chart.pivot == "s3"
    assert chart.nodes["s3"].lines == ["confirm_order", "pivot (point of no return)"]
    assert chart.nodes["start"].lines == ["start", "saga timeout 5s"]


def test_the_docs_example_shows_the_chart_and_repr_its_flow_gives() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    section = page[page.index("## Diagrams") :]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    code = next(text for kind, text in blocks if kind == "python")
    namespace: dict[str, Any] = {"__name__": "observability_example"}
    exec(compile(code, "docs/observability.md", "exec", dont_inherit=True), namespace)
    flow = namespace["flow"]

    assert next(text for kind, text in blocks if kind == "mermaid") == flow.to_mermaid() + "\n"
    assert next(text for kind, text in blocks if kind == "text") == repr(flow) + "\n"
    assert parse(flow.to_mermaid()).path() == [
        "reserve_stock",
        ("charge_card", "issue_ticket"),
        "send_email",
    ]


# `spakky-saga graph`


TARGETS = '''
from datetime import timedelta

from spakky_saga import AbstractSaga, AbstractSagaData, Retry, SagaFlow, saga_flow, saga_step
from spakky_saga import step


class Data(AbstractSagaData):
    n: int = 0


async def reserve(data: Data) -> None: ...
async def release(data: Data) -> None: ...


flow = saga_flow(step(reserve) >> release, step(reserve, name="again") | Retry(2))


def make_flow() -> SagaFlow[Data]:
    return flow


class NoArguments(AbstractSaga[Data]):
    @saga_step
    async def go(self, data: Data) -> None: ...

    def flow(self) -> SagaFlow[Data]:
        return saga_flow(self.go).timeout(timedelta(seconds=3))


class Plain:
    """Not an AbstractSaga: only has a flow() method."""

    def flow(self) -> SagaFlow[Data]:
        return saga_flow(reserve)


class NeedsDependencies(NoArguments):
    def __init__(self, database: object, mailer: object, retries: int = 3) -> None: ...


def make_saga() -> NoArguments:
    return NoArguments()


saga = NoArguments()
not_a_flow = 42


def needs_arguments(name: str) -> SagaFlow[Data]:
    return flow


async def async_factory() -> SagaFlow[Data]:
    return flow


def fails() -> SagaFlow[Data]:
    raise RuntimeError("database down")


def broken() -> SagaFlow[Data]:
    return saga_flow(step(reserve), 5)  # type: ignore


def returns_text() -> str:
    return "flow"


class WrongFlow(AbstractSaga[Data]):
    def flow(self) -> SagaFlow[Data]:
        return "not a flow"  # type: ignore


class PlainWrongFlow:
    def flow(self) -> str:
        return "not a flow"


def returns_coroutine():  # type: ignore
    return async_factory()
'''


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of graph targets, importable from the current directory."""
    name = "graph_targets"
    (tmp_path / f"{name}.py").write_text(TARGETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.modules.pop(f"{name}_broken", None)


def graph(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["graph", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_graph_prints_the_flow_a_module_variable_names(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = sys.modules.get(targets) or __import__(targets)

    code, out, err = graph(capsys, f"{targets}:flow")

    assert (code, err) == (0, "")
    assert out == module.flow.to_mermaid() + "\n"
    assert parse(out.rstrip("\n")).path() == ["reserve", "again"]


@pytest.mark.parametrize(
    ("attribute", "path"),
    [
        ("make_flow", ["reserve", "again"]),
        ("NoArguments", ["go"]),
        ("Plain", ["reserve"]),
        ("saga", ["go"]),
        ("make_saga", ["go"]),
    ],
)
def test_graph_accepts_a_saga_class_a_saga_or_a_function_returning_a_flow_or_a_saga(
    targets: str, capsys: pytest.CaptureFixture[str], attribute: str, path: list[str]
) -> None:
    code, out, _ = graph(capsys, f"{targets}:{attribute}")

    assert code == 0
    assert parse(out.rstrip("\n")).path() == path


def test_graph_wraps_the_chart_in_a_mermaid_fence_with_markdown(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, plain, _ = graph(capsys, f"{targets}:flow")
    code, out, _ = graph(capsys, f"{targets}:flow", "--markdown")

    assert code == 0
    assert out == f"```mermaid\n{plain}```\n"


def test_graph_draws_left_to_right_when_asked(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = graph(capsys, f"{targets}:flow", "--direction", "LR")

    assert code == 0
    assert out.startswith("flowchart LR\n")


def test_graph_of_a_class_that_needs_dependencies_explains_what_to_point_at_instead(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = graph(capsys, f"{targets}:NeedsDependencies")

    assert (code, out) == (2, "")
    assert err == (
        f"spakky-saga: graph {targets}:NeedsDependencies: NeedsDependencies takes constructor "
        "arguments (database, mailer), its dependencies, which the graph command cannot give; "
        "point at its flow instead: a module-level SagaFlow, or a function that creates the "
        "saga (with stand-ins for its dependencies) and returns saga.flow(), e.g. "
        "MODULE:order_flow\n"
    )


def test_graph_of_the_demo_saga_class_asks_for_its_flow_instead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)

    code, _, err = graph(capsys, "examples.order_saga:CreateOrderSaga")

    assert code == 2
    assert "CreateOrderSaga takes constructor arguments (kitchen, inventory, payments)" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{m}", "graph {m}: write MODULE:ATTRIBUTE, e.g. myapp.sagas:order_flow"),
        (":flow", "graph :flow: write MODULE:ATTRIBUTE"),
        ("no_such_module:flow", "cannot import it (ModuleNotFoundError: No module named"),
        ("{m}:nothing", "cannot import it (AttributeError: "),
        ("{m}:not_a_flow", "expected a SagaFlow, a saga class, or a function returning a flow"),
        ("{m}:Data", "class Data has no flow() method"),
        ("{m}:needs_arguments", "needs_arguments takes arguments (name) that the graph command"),
        ("{m}:async_factory", "async_factory is an async function, and the graph command runs"),
        ("{m}:returns_text", "returns_text() returned 'flow', expected a SagaFlow or a saga"),
        ("{m}:returns_coroutine", "returns_coroutine() returned <coroutine object"),
    ],
)
def test_graph_usage_errors_exit_2_and_say_what_to_write(
    targets: str, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    code, out, err = graph(capsys, spec.format(m=targets))

    assert (code, out) == (2, "")
    assert err.startswith("spakky-saga: graph ")
    assert message.format(m=targets) in err


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("fails", "fails() raised RuntimeError: database down"),
        ("broken", "broken() raised SagaFlowDefinitionError: "),
        ("WrongFlow", "WrongFlow.flow() raised SagaFlowDefinitionError: WrongFlow.flow() returned"),
        ("PlainWrongFlow", "PlainWrongFlow.flow() returned 'not a flow', expected a SagaFlow"),
    ],
)
def test_graph_of_a_target_whose_code_fails_exits_1_with_its_error(
    targets: str, capsys: pytest.CaptureFixture[str], attribute: str, message: str
) -> None:
    code, out, err = graph(capsys, f"{targets}:{attribute}")

    assert (code, out) == (1, "")
    assert message in err


def test_graph_of_a_module_whose_import_fails_exits_1_with_its_error(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(f"{targets}_broken.py").write_text("raise RuntimeError('no config')\n")

    code, out, err = graph(capsys, f"{targets}_broken:flow")

    assert (code, out) == (1, "")
    assert err == (
        f"spakky-saga: graph {targets}_broken:flow: importing {targets}_broken raised "
        "RuntimeError: no config\n"
    )


def test_graph_without_a_target_is_an_argparse_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["graph"])

    assert exited.value.code == 2
    assert "MODULE:TARGET" in capsys.readouterr().err
