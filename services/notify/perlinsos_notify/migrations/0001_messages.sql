-- One SMS per participant and decision: the unique key makes a redelivered decision a no-op.
CREATE TABLE messages (
    message_id          text PRIMARY KEY,
    participant_id      text        NOT NULL,
    decision_id         text        NOT NULL UNIQUE,
    template            text        NOT NULL,
    phone_e164          text        NOT NULL,
    body                text        NOT NULL,
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'accepted', 'failed', 'undeliverable')),
    attempts            int         NOT NULL DEFAULT 0,
    provider            text,
    provider_message_id text,
    segments            int,
    last_error          text,
    traceparent         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_pending ON messages (created_at) WHERE status = 'pending';
CREATE INDEX messages_participant ON messages (participant_id);
