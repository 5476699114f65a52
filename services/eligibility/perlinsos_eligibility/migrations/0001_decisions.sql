-- What eligibility knows of each participant and its current decision.
CREATE TABLE participants (
    participant_id  text PRIMARY KEY,
    occupation      text        NOT NULL,
    funding_line    text,
    birth_date      date        NOT NULL,
    address         jsonb       NOT NULL,
    existing_bpjs_tk boolean    NOT NULL,
    first_name      text        NOT NULL,
    phone_e164      text        NOT NULL,
    agency          text        NOT NULL,
    request_id      text        NOT NULL,
    enrolled_at     timestamptz NOT NULL,
    outcome         text        NOT NULL,
    cover_start     date,
    cover_end       date,
    rule_version    text        NOT NULL,
    decided_at      timestamptz NOT NULL
);
CREATE INDEX participants_line_outcome ON participants (funding_line, outcome);

-- Every decision ever published, for explanation and audit.
CREATE TABLE decisions (
    decision_id    text PRIMARY KEY,
    participant_id text        NOT NULL,
    outcome        text        NOT NULL,
    funding_line   text,
    reasons        jsonb       NOT NULL,
    cover_start    date,
    cover_end      date,
    rule_version   text        NOT NULL,
    decided_at     timestamptz NOT NULL
);
CREATE INDEX decisions_participant ON decisions (participant_id, decided_at);
