-- Coming back: a person who exited can be enrolled again. `participants` keeps one row
-- per NIK with the current membership's data; every membership period is kept here, so
-- one person's history (both periods, both exits) can be told.
ALTER TABLE participants ADD COLUMN membership integer NOT NULL DEFAULT 1;

CREATE TABLE memberships (
    participant_id text        NOT NULL,
    membership     integer     NOT NULL CHECK (membership >= 1),
    agency         text        NOT NULL,
    request_id     text        NOT NULL,
    occupation     text        NOT NULL,
    enrolled_at    timestamptz NOT NULL,
    exited_on      date,
    exit_reason    text,
    PRIMARY KEY (participant_id, membership)
);
INSERT INTO memberships (participant_id, membership, agency, request_id, occupation,
                         enrolled_at, exited_on, exit_reason)
SELECT participant_id, 1, agency, request_id, occupation, enrolled_at, exited_on, exit_reason
FROM participants;
