"""Ids made by `new_id` sort in the order they were made (their form: tests/test_contracts.py)."""

import uuid

from perlinsos_shared.envelope import CloudEvent, new_id


def test_ids_made_later_sort_later() -> None:
    # What keeps every index keyed by an id growing at its right edge.
    ids = [new_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_an_event_without_an_id_gets_one() -> None:
    event = CloudEvent[object].model_validate(  # type: ignore[type-var]
        {"source": "perlinsos/test", "type": "t", "data": None}
    )
    assert uuid.UUID(event.id).version == 7
