"""Saga data as highlighted JSON, rendered on the server: indented, each token in a `<span>`
whose class says what it is (key, string, number, literal, punctuation), every character of
it escaped. No script highlights anything in the browser; a value holding markup is text."""

from __future__ import annotations

import json
import re
from typing import Final

from markupsafe import Markup, escape

_TOKEN: Final = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*")(?P<colon>\s*:)?'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<literal>\btrue\b|\bfalse\b|\bnull\b)"
    r"|(?P<punctuation>[{}\[\],])"
)


def pretty_json(text: str) -> str:
    """`text` indented (keys sorted) when it is JSON, else as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


def highlight_json(text: str) -> Markup:
    """`text` indented and highlighted when it is JSON; escaped as it is otherwise."""
    pretty = pretty_json(text)
    if pretty is text:
        return escape(text)
    parts: list[str] = []
    position = 0
    for token in _TOKEN.finditer(pretty):
        parts.append(escape(pretty[position : token.start()]))
        if token["string"] is not None:
            kind = "key" if token["colon"] else "string"
            parts.append(_span(kind, token["string"]))
            if token["colon"]:
                parts.append(escape(token["colon"]))
        else:
            kind = token.lastgroup or "punctuation"
            parts.append(_span(kind, token.group()))
        position = token.end()
    parts.append(escape(pretty[position:]))
    return Markup("".join(parts))


def _span(kind: str, text: str) -> str:
    return f'<span class="j-{kind}">{escape(text)}</span>'
