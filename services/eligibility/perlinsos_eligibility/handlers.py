"""Eligibility's Kafka handler: decode, hand the batch to a `Placement`, let it write."""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

import asyncpg

from perlinsos_eligibility.placement import Headers, Newcomer, Placement
from perlinsos_eligibility.rules import RuleBook
from perlinsos_eligibility.store import Person
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Handler, Incoming
from perlinsos_shared.events import (
    ParticipantBpjsAnswered,
    ParticipantEnrolled,
    ParticipantExited,
)
from perlinsos_shared.masking import pseudonym
from perlinsos_shared.outbox import Outbox


def first_name(full_name: str) -> str:
    parts = full_name.split()
    return parts[0] if parts else full_name


def newcomer(p: ParticipantEnrolled, headers: Headers) -> Newcomer:
    return Newcomer(
        Person(
            participant_id=p.participant_id,
            occupation=p.occupation,
            birth_date=p.birth_date,
            address=p.address,
            existing_bpjs_tk=p.existing_bpjs_tk,
            first_name=first_name(p.full_name),
            phone_e164=p.phone_e164,
            agency=p.agency,
            request_id=p.request_id,
            enrolled_at=p.enrolled_at,
            nik_hash=pseudonym(p.nik),
            nik=p.nik,
            full_name=p.full_name,
            sex=p.sex,
        ),
        headers,
    )


def make_handler(rules: Callable[[], RuleBook]) -> Handler:
    """The handler of `registry.participants.v1`, deciding under `rules()`."""

    async def handle_participants(
        conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
    ) -> None:
        work = Placement(conn, rules(), now_local())
        # Runs of one event type are applied set-based; order across runs is kept, so an
        # exit after an enrolment of the same participant in one batch sees it.
        for kind, run in groupby(messages, key=lambda m: m.type):
            batch = list(run)
            if kind == ParticipantEnrolled.event_type:
                await work.enrol(
                    [
                        newcomer(
                            ParticipantEnrolled.model_validate(m.envelope.data), m.trace_headers
                        )
                        for m in batch
                    ]
                )
            elif kind == ParticipantExited.event_type:
                await work.exit(
                    [
                        (ParticipantExited.model_validate(m.envelope.data), m.trace_headers)
                        for m in batch
                    ]
                )
            elif kind == ParticipantBpjsAnswered.event_type:
                await work.bpjs_answered(
                    [
                        (ParticipantBpjsAnswered.model_validate(m.envelope.data), m.trace_headers)
                        for m in batch
                    ]
                )
            else:
                raise ValueError(f"unknown event type {kind!r}")
        await work.finish(outbox)

    return handle_participants
