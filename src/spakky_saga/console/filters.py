"""The list view's URL parameters as a `SagaQuery`, and back: `status` (repeatable), `name`,
`id` (a saga id prefix), `from`/`to` (ISO times, naive is UTC) on `time` (`updated` or
`created`), `sort` (`updated`/`created`), `order` (`desc`/`asc`), `after` (a page cursor),
`limit`. A value the console cannot read is refused with a `SagaQueryError` saying which."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from spakky_saga.query import PageCursor, SagaQuery, SagaQueryError, SagaSort
from spakky_saga.store import StoredStatus


@dataclass(frozen=True, slots=True)
class ListFilter:
    """The list's filters as the page shows them (the form's values) and the query they make."""

    query: SagaQuery
    form: dict[str, str]
    statuses: tuple[str, ...]

    def url_query(self) -> str:
        """The filter as a URL's query (`?name=...&status=...`), without a page cursor."""
        chosen = [
            *((k, v) for k, v in self.form.items() if v),
            *(("status", s) for s in self.statuses),
        ]
        return "?" + urlencode(chosen)


def _one(params: Mapping[str, str], key: str) -> str:
    return params.get(key, "").strip()


def _moment(text: str, name: str) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SagaQueryError(
            f"{name}={text!r} is not an ISO date or time; write e.g. 2026-05-01 or "
            "2026-05-01T12:30 (UTC) or 2026-05-01T12:30+02:00"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _choice(text: str, name: str, choices: Sequence[str]) -> str:
    if text and text not in choices:
        raise SagaQueryError(f"{name}={text!r}: choose one of {', '.join(choices)}")
    return text or choices[0]


def list_filter(params: Mapping[str, str], statuses: Sequence[str]) -> ListFilter:
    """The filter the URL parameters `params` (with the repeated `statuses`) describe."""
    known = {s.value: s for s in StoredStatus}
    unknown = [s for s in statuses if s not in known]
    if unknown:
        raise SagaQueryError(
            f"status={unknown[0]!r} is not a saga status; choose among {', '.join(known)}"
        )
    sort = _choice(_one(params, "sort"), "sort", ("updated", "created"))
    order = _choice(_one(params, "order"), "order", ("desc", "asc"))
    on = _choice(_one(params, "time"), "time", ("updated", "created"))
    start = _moment(_one(params, "from"), "from")
    end = _moment(_one(params, "to"), "to")
    limit_text = _one(params, "limit") or "50"
    if not limit_text.isdigit():
        raise SagaQueryError(f"limit={limit_text!r}: give a number of sagas per page, e.g. 50")
    name = _one(params, "name")
    after = _one(params, "after")
    query = SagaQuery(
        statuses=tuple(known[s] for s in statuses),
        names=(name,) if name else (),
        id_prefix=_one(params, "id"),
        sort=SagaSort(sort),
        descending=order == "desc",
        limit=int(limit_text),
        after=PageCursor.decode(after) if after else None,
    )
    if on == "updated":
        query = replace(query, updated_from=start, updated_to=end)
    else:
        query = replace(query, created_from=start, created_to=end)
    form = {
        "name": name,
        "id": query.id_prefix,
        "from": _one(params, "from"),
        "to": _one(params, "to"),
        "time": on,
        "sort": sort,
        "order": order,
        "limit": limit_text,
    }
    return ListFilter(query, form, tuple(statuses))
