"""Ids made by `new_id` sort in the order they were made (their form: tests/test_contracts.py)."""

import uuid

from pydantic import BaseModel

from perlinsos_shared.envelope import CloudEvent, new_id


def test_ids_made_later_sort_later() -> None:
    # What keeps every index keyed by an id growing at its right edge.
    ids = [new_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


class _Data(BaseModel):
    n: int


def test_an_event_without_an_id_gets_one() -> None:
    event = CloudEvent[_Data].model_validate(
        {"source": "perlinsos/test", "type": "t", "data": {"n": 1}}
    )
    assert uuid.UUID(event.id).version == 7
