-- One participant per NIK. Personal data lives here and in the events registry emits.
CREATE TABLE participants (
    participant_id   text PRIMARY KEY,
    nik              text        NOT NULL UNIQUE,
    full_name        text        NOT NULL,
    birth_date       date        NOT NULL,
    sex              char(1)     NOT NULL CHECK (sex IN ('L', 'P')),
    phone_e164       text        NOT NULL,
    address          jsonb       NOT NULL,
    occupation       text        NOT NULL,
    evidence         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    existing_bpjs_tk boolean     NOT NULL,
    agency           text        NOT NULL,
    request_id       text        NOT NULL,
    enrolled_at      timestamptz NOT NULL,
    exited_on        date,
    exit_reason      text
);

-- Every (agency, request_id) seen, with its outcome: resubmissions get the same answer.
CREATE TABLE submissions (
    agency         text        NOT NULL,
    request_id     text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('enrolment', 'exit')),
    outcome        text        NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reasons        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    participant_id text,
    event_id       text        NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agency, request_id)
);

-- Every change to a participant: who, under which request, when, what changed.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    participant_id text        NOT NULL,
    agency         text        NOT NULL,
    request_id     text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    action         text        NOT NULL,
    changes        jsonb       NOT NULL
);
CREATE INDEX audit_log_participant ON audit_log (participant_id, id);
