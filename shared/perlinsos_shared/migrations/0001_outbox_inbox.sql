-- Transactional outbox: state and the events it causes commit together.
-- Rows are kept after publication so a broker that lost its topics can be refilled.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text        NOT NULL,
    key          text,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Inbox: every consumed event id, recorded in the transaction that applied it.
CREATE TABLE inbox (
    event_id    text PRIMARY KEY,
    topic       text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
