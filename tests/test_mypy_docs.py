"""docs/mypy-plugin.md shows, for each error code, wrong examples (one or more) and mypy's
exact output: check that mypy with the plugin still prints exactly that."""

from __future__ import annotations

import re
from pathlib import Path

from spakky_saga_mypy import errorcodes
from tests.mypy_support import run_mypy

DOC = Path(__file__).parent.parent / "docs" / "mypy-plugin.md"
EXAMPLE = re.compile(
    r"```python\n# (?P<file>wrong_\w+\.py)\n(?P<source>.*?)```\n\nmypy says:\n\n"
    r"```text\n(?P<output>.*?)\n```",
    re.DOTALL,
)


def _codes(output: str) -> set[str]:
    return set(re.findall(r"\[(saga-[a-z-]+)\]$", output, re.MULTILINE))


def test_every_error_code_has_a_documented_example() -> None:
    text = DOC.read_text()

    for code in errorcodes.ALL_CODES:
        assert f"### `{code.code}`" in text
        assert f"[{code.code}]" in text


def test_documented_messages_are_what_mypy_prints(tmp_path: Path) -> None:
    examples = list(EXAMPLE.finditer(DOC.read_text()))
    for example in examples:
        (tmp_path / example["file"]).write_text(example["source"])

    run = run_mypy(tmp_path, *(example["file"] for example in examples))

    assert len({example["file"] for example in examples}) == len(examples)
    documented = {code for example in examples for code in _codes(example["output"])}
    assert documented == {code.code for code in errorcodes.ALL_CODES}
    assert sorted(run.lines) == sorted(
        line for example in examples for line in example["output"].splitlines()
    )
