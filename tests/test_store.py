"""`spakky_saga.store`: the records a store keeps (the stores themselves: tests/stores/)."""

from __future__ import annotations

from spakky_saga.store import EventFields, StoredEvent, stored_event

FIELDS: EventFields = (
    3,
    "step_failed",
    12.5,
    "2",
    "charge",
    2,
    0.25,
    "ValueError",
    "no",
    None,
    None,
    "me",
    "tb",
)


def test_the_fast_constructor_makes_the_same_stored_event_as_the_named_tuple() -> None:
    made = stored_event(FIELDS)

    assert type(made) is StoredEvent
    assert made == StoredEvent(*FIELDS)
    assert (made.seq, made.kind, made.owner, made.traceback) == (3, "step_failed", "me", "tb")


def test_the_fast_constructor_is_typed_with_every_field_of_a_stored_event() -> None:
    """A field added to StoredEvent and not to EventFields would make short entries."""
    assert len(EventFields.__value__.__args__) == len(StoredEvent._fields)
