"""The package's import graph, read from the source with `ast` (imports under TYPE_CHECKING
and inside functions count): definitions flow one way. How a flow runs knows nothing of
durability, and the durable code never reaches back into the engine facade."""

from __future__ import annotations

import ast
from pathlib import Path

import spakky_saga

SOURCE = Path(spakky_saga.__file__).parent


def imports_of(module: str) -> set[str]:
    """The `spakky_saga` modules `module` imports, anywhere in its file."""
    path = SOURCE / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("spakky_saga.")
        ):
            found.add(node.module.removeprefix("spakky_saga."))
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("spakky_saga.")
                for alias in node.names
                if alias.name.startswith("spakky_saga.")
            )
    return found


def reachable(start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        for imported in imports_of(module):
            if imported not in seen and (SOURCE / (imported.replace(".", "/") + ".py")).exists():
                seen.add(imported)
                todo.append(imported)
    return seen


def test_the_durable_code_never_imports_the_engine_facade() -> None:
    for module in ("durable", "recovery", "journal", "registry", "fingerprint", "store"):
        assert "engine" not in reachable(module), module


def test_how_a_flow_runs_knows_nothing_of_durability_or_the_facade() -> None:
    below = reachable("execution")
    durability = {"durable", "recovery", "journal", "registry", "fingerprint", "codec"}
    stores = {"stores.memory", "stores.sqlite", "stores.postgres"}
    assert below.isdisjoint({"engine"} | durability | stores)


def test_there_is_no_cycle_through_the_engine_the_executor_or_the_durable_code() -> None:
    for module in ("engine", "execution", "durable", "recovery", "journal", "run", "plan"):
        assert module not in reachable(module), f"{module} imports itself through others"
